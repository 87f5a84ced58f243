/**
 * The V8 flags a server process starts with. A server's heap is small (tens of MB of block
 * metadata) while it allocates fast, and with V8's default limits it starts a full
 * collection every 100 ms or so with its heap barely grown, each a pause of 5-25 ms that
 * every request in flight waits through. A floor of 128 MB under the old generation's
 * limit leaves that pace to the heap's real growth (under load: 309 full collections in
 * 45 s without it, 5 with it; docs/ARCHITECTURE.md, "Request buffers"). V8 takes it only on
 * the command line, not from NODE_OPTIONS, so whatever starts a server passes it. The soak's
 * harness, which times every request on its own small heap, starts with them too.
 */
export const NODE_FLAGS = ['--initial-old-space-size=128'];

/** The flags this process lacks (empty when it was started with all of them). */
export function missingNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return NODE_FLAGS.filter((f) => !execArgv.includes(f));
}
