/** Byte counts as people read them, for logs, reports and error messages. */
export const GiB = 2 ** 30;

/** In the largest binary unit that keeps the number at least 1: `512 B`, `1.50 GiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(2)} ${units[i]}`;
}

/** Always in GiB, so that sizes set side by side compare at a glance: `0.50 GiB`. */
export function formatGiB(n: number): string {
  return `${(n / GiB).toFixed(2)} GiB`;
}
