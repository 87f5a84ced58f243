/**
 * Prefix caching by chained block hashes, as engines compute them: a block's hash covers
 * its parent's hash and its own token ids, so equal hashes mean equal whole prefixes.
 *
 *   hash(block i) = first 16 bytes of SHA-256( hash(block i-1) || token ids as u32 LE )
 *
 * with 16 zero bytes as the parent of block 0; written as 32 lowercase hex digits.
 */
import { createHash } from 'node:crypto';

export const ROOT_HASH = '0'.repeat(32);

export function blockHash(parent: string, tokens: ArrayLike<number>): string {
  const body = Buffer.alloc(16 + tokens.length * 4);
  body.write(parent, 0, 'hex');
  for (let i = 0; i < tokens.length; i++) body.writeUInt32LE(tokens[i]!, 16 + i * 4);
  return createHash('sha256').update(body).digest().subarray(0, 16).toString('hex');
}

/** The chain of hashes for the full blocks of a token sequence (a partial tail is left out). */
export function chainHashes(tokens: ArrayLike<number>, tokensPerBlock: number): string[] {
  const hashes: string[] = [];
  let parent = ROOT_HASH;
  for (let start = 0; start + tokensPerBlock <= tokens.length; start += tokensPerBlock) {
    parent = blockHash(parent, Array.prototype.slice.call(tokens, start, start + tokensPerBlock) as number[]);
    hashes.push(parent);
  }
  return hashes;
}
