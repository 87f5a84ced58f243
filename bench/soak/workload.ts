/**
 * The engine the soak plays: sequences arrive, attach a shared prefix (a "system prompt"
 * family, or the whole prompt of a finished conversation they continue), prefill their
 * prompt in batches committed to the prefix cache, then decode block by block with
 * Zipf-skewed reads, sometimes rewriting their tail block, until they reach their length
 * and are freed. What each block holds follows from its key alone (content.ts).
 */
import { blockHash, ROOT_HASH } from '../../runtime/prefix.js';
import { rng } from '../block-content.js';
import { seedOf } from './content.js';

export interface WorkloadOptions {
  seed: number;
  tokensPerBlock: number;
  minTokens: number;
  maxTokens: number;
  /** Distinct shared "system prompts". */
  families: number;
  familyBlocks: number;
  /** Share of arrivals that start with a family's prefix. */
  familyShare: number;
  /** Share of arrivals that continue a finished conversation, prompt and all. */
  continueShare: number;
  /** Largest prompt, in blocks past the family prefix. */
  promptBlocks: number;
  /** Zipf exponent of the read pattern. */
  zipf: number;
}

/** Kinds of block content, the first part of every block's key. */
const FAMILY = 1;
const PROMPT = 2;
const DECODE = 3;

/** A finished conversation's prompt, which a later arrival may continue. */
export interface Prompt {
  family: number;
  familyBlocks: number;
  uid: number;
  blocks: number;
}

export class SequenceModel {
  readonly id: string;
  readonly uid: number;
  readonly epoch: number;
  readonly prompt: Prompt;
  /** Length it decodes to, in blocks. */
  readonly target: number;
  /** The server's block id at each index (a deduplicated write changes it). */
  readonly blockIds: number[] = [];
  /** Writes of each decode block so far; 0: not written yet. */
  readonly versions: number[] = [];
  /** Leading blocks written. */
  written = 0;

  constructor(id: string, uid: number, epoch: number, prompt: Prompt, target: number) {
    this.id = id;
    this.uid = uid;
    this.epoch = epoch;
    this.prompt = prompt;
    this.target = Math.max(target, prompt.blocks + 1);
  }
}

export class Workload {
  readonly o: WorkloadOptions;
  private readonly random: () => number;
  private nextUid = 1;
  /** Recently finished prompts, for continuing arrivals. */
  private finished: Prompt[] = [];

  constructor(o: WorkloadOptions) {
    this.o = o;
    this.random = rng(o.seed);
  }

  uniform(): number {
    return this.random();
  }

  /** A rank from 0 to n-1, rank 0 the most likely, P(r) ~ 1 / (r + 1)^s (inverse CDF of the continuous law). */
  zipfRank(n: number): number {
    const s = this.o.zipf;
    const u = this.random();
    const x = s === 1 ? Math.pow(n + 1, u) : Math.pow(1 + u * (Math.pow(n + 1, 1 - s) - 1), 1 / (1 - s));
    return Math.min(n - 1, Math.max(0, Math.floor(x) - 1));
  }

  /** A new sequence: its prompt and the length it will reach. */
  arrival(epoch: number): SequenceModel {
    const uid = this.nextUid++;
    const o = this.o;
    const tpb = o.tokensPerBlock;
    // Lengths log-uniform between the bounds: many short conversations, some very long.
    const tokens = o.minTokens * Math.pow(o.maxTokens / o.minTokens, this.random());
    const target = Math.max(1, Math.floor(tokens / tpb));
    let prompt: Prompt;
    const r = this.random();
    if (r < o.continueShare && this.finished.length > 0) {
      prompt = this.finished[Math.floor(this.random() * this.finished.length)]!;
    } else {
      const family = r < o.continueShare + o.familyShare ? this.zipfRank(o.families) : -1;
      const familyBlocks = family < 0 ? 0 : o.familyBlocks;
      prompt = { family, familyBlocks, uid, blocks: Math.min(target, familyBlocks + 1 + Math.floor(this.random() * o.promptBlocks)) };
    }
    return new SequenceModel(`soak-${o.seed}-${uid}`, uid, epoch, prompt, target);
  }

  /** A freed sequence's prompt may be continued later. */
  finish(seq: SequenceModel): void {
    if (seq.written < seq.prompt.blocks) return;
    this.finished.push(seq.prompt);
    if (this.finished.length > 64) this.finished.shift();
  }

  /** After a restart nothing is cached: no arrival may count on an old prompt. */
  forgetPrompts(): void {
    this.finished = [];
  }

  /** The seed of what block `index` of `seq` holds now (a decode block: at `version`). */
  seedOf(seq: SequenceModel, index: number, version = seq.versions[index] ?? 0): number {
    const p = seq.prompt;
    if (index < p.familyBlocks) return seedOf(this.o.seed, FAMILY, p.family, index);
    if (index < p.blocks) return seedOf(this.o.seed, PROMPT, p.uid, index);
    return seedOf(this.o.seed, DECODE, seq.uid, index, version);
  }

  /** Token ids of a prompt block (committed to the prefix cache). */
  tokens(seq: SequenceModel, index: number): number[] {
    const p = seq.prompt;
    const [kind, owner] = index < p.familyBlocks ? [FAMILY, p.family] : [PROMPT, p.uid];
    return Array.from({ length: this.o.tokensPerBlock }, (_, j) => seedOf(this.o.seed, kind, owner, index, j) & 0x7fffffff);
  }

  /** The chained hashes of a sequence's prompt blocks. */
  promptHashes(seq: SequenceModel): string[] {
    const hashes: string[] = [];
    let parent = ROOT_HASH;
    for (let i = 0; i < seq.prompt.blocks; i++) {
      parent = blockHash(parent, this.tokens(seq, i));
      hashes.push(parent);
    }
    return hashes;
  }
}
