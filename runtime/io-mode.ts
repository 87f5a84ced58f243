/**
 * How the GPU backend's disk tier and the weights arena read and write files
 * (`tiers.disk.io`). The addon decides once, at open, with its reason
 * (addon/src/io/io_mode.h): `auto` takes cuFile where the driver opens and the file
 * registers, POSIX with pinned bounce buffers otherwise; `cufile` fails instead.
 */
export const IO_MODES = ['auto', 'cufile', 'posix'] as const;
export type IoMode = (typeof IO_MODES)[number];

/** The path an open settled on. */
export type IoPath = Exclude<IoMode, 'auto'>;
