/**
 * Leases for zero-copy access. An engine that maps tier 0 and addresses blocks by slot
 * holds each block it acquires under a lease: a client id and a time to live, renewed by
 * a heartbeat or by any call that names the lease. A lease that is not renewed in time
 * expires: one timer per lease (unref'd, so it never keeps the process alive) calls
 * `onExpire`, and the store releases every block the lease held. So an engine that dies
 * without releasing its blocks leaves them pinned for at most one TTL.
 */
import { randomBytes } from 'node:crypto';
import { errors, SpillwayError } from './errors.js';

export const LEASE_TTL_MIN_MS = 50;
export const LEASE_TTL_MAX_MS = 10 * 60_000;
export const LEASE_TTL_DEFAULT_MS = 30_000;
export const LEASE_CLIENT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface LeaseInfo {
  id: string;
  client: string;
  ttlMs: number;
  /** ms since the epoch. */
  expiresAt: number;
  /** Blocks acquired under the lease and not yet released. */
  blocks: number;
}

interface Lease {
  id: string;
  client: string;
  ttlMs: number;
  expiresAt: number;
  timer: NodeJS.Timeout;
  /** Block ids held. */
  held: Set<number>;
}

export class LeaseManager {
  private readonly leases = new Map<string, Lease>();
  private readonly onExpire: (id: string, held: number[]) => void;

  constructor(onExpire: (id: string, held: number[]) => void) {
    this.onExpire = onExpire;
  }

  get size(): number {
    return this.leases.size;
  }

  create(client: string, ttlMs: number = LEASE_TTL_DEFAULT_MS): LeaseInfo {
    if (!LEASE_CLIENT_ID.test(client)) {
      throw errors.badIdentifier('client', 'client');
    }
    if (!Number.isInteger(ttlMs) || ttlMs < LEASE_TTL_MIN_MS || ttlMs > LEASE_TTL_MAX_MS) {
      throw new SpillwayError('INVALID_ARGUMENT', `ttlMs must be an integer from ${LEASE_TTL_MIN_MS} to ${LEASE_TTL_MAX_MS}`, { field: 'ttlMs' });
    }
    const id = `lease-${randomBytes(12).toString('hex')}`;
    const timer = setTimeout(() => this.expire(id), ttlMs);
    timer.unref();
    const lease: Lease = { id, client, ttlMs, expiresAt: Date.now() + ttlMs, timer, held: new Set() };
    this.leases.set(id, lease);
    return this.info(lease);
  }

  /** Renews a lease for another TTL; LEASE_NOT_FOUND if it never existed, expired or ended. */
  touch(id: string): LeaseInfo {
    const lease = this.get(id);
    lease.expiresAt = Date.now() + lease.ttlMs;
    lease.timer.refresh();
    return this.info(lease);
  }

  has(id: string): boolean {
    return this.leases.has(id);
  }

  holds(id: string, blockId: number): boolean {
    return this.leases.get(id)?.held.has(blockId) ?? false;
  }

  /** Every (lease, block) hold: what the store's invariant check walks. */
  *holdings(): Generator<{ lease: string; blockId: number }> {
    for (const lease of this.leases.values()) for (const blockId of lease.held) yield { lease: lease.id, blockId };
  }

  hold(id: string, blockId: number): void {
    this.get(id).held.add(blockId);
  }

  unhold(id: string, blockId: number): void {
    this.leases.get(id)?.held.delete(blockId);
  }

  /** Ends a lease now, returning the blocks it held (the caller releases them). */
  end(id: string): number[] {
    const lease = this.get(id);
    clearTimeout(lease.timer);
    this.leases.delete(id);
    return [...lease.held];
  }

  close(): void {
    for (const lease of this.leases.values()) clearTimeout(lease.timer);
    this.leases.clear();
  }

  private expire(id: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    this.onExpire(id, [...lease.held]);
  }

  private get(id: string): Lease {
    const lease = this.leases.get(id);
    if (!lease) throw new SpillwayError('LEASE_NOT_FOUND', `lease ${id} does not exist: it expired, was ended, or was never created`, { field: 'lease', lease: id });
    return lease;
  }

  private info(lease: Lease): LeaseInfo {
    return { id: lease.id, client: lease.client, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt, blocks: lease.held.size };
  }
}
