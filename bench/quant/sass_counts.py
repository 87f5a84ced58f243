#!/usr/bin/env python3
"""Static instruction counts of the tensor-core probe's kernels (bench/quant/mma_probe.cu).

Compiles the probe for sm_90 (H100/H200) into a cubin, disassembles it, finds each kernel's
main loop (its longest backward branch: one warp's group of tiles) and counts the SASS
instructions in it, NOPs left out, per value the lane codes or decodes (32 a tile). That is
the issue budget's measure (docs/QUANTIZATION.md: about 29 instructions a value at perfect
issue for 0.70 of a device-to-device copy on the H200), taken without a GPU.

    python3 bench/quant/sass_counts.py [--nvdisasm PATH] [--out FILE.md]

The disassembler is nvdisasm (PATH, or --nvdisasm). One older than the compiler refuses the
newer cubin's ELF header though it knows sm_90's instructions; the header is then rewritten
to the older ABI's fields (ELF ABI 7, e_flags for sm_90) and the disassembly tried again.
"""
import argparse
import collections
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, 'bench', 'quant', 'mma_probe.cu')

# The kernels by their mangled template arguments: operand bytes, the variant, tiles.
KERNELS = [
    (re.compile(r'quantize_mmaILi(\d)ELNS_6CodingE(\d)ELi(\d)E'), lambda b, coding, t: (
        'quantize', int(b), ['counting', 'binary search', 'polynomial'][int(coding)], int(t))),
    (re.compile(r'quantize_stageILi(\d)ELNS0_5StageE(\d)ELi(\d)E'), lambda b, stage, t: (
        'quantize up to', int(b), ['loads and stores', 'the fixed point', 'the products'][int(stage)], int(t))),
    (re.compile(r'dequantize_mmaILi(\d)ELi(\d)ELNS_6LookupE(\d)E'), lambda b, t, lookup: (
        'dequantize', int(b), 'centroids in ' + ('shared memory' if lookup == '0' else 'registers'), int(t))),
]


def compile_cubin(path):
    nvcc = shutil.which(os.environ.get('NVCC', 'nvcc')) or '/usr/local/cuda/bin/nvcc'
    subprocess.run([nvcc, '-std=c++17', '-O3', '-gencode', 'arch=compute_90,code=sm_90', '-I' + os.path.join(ROOT, 'kernels'),
                    '-cubin', '-o', path, SOURCE], check=True)


def as_older_abi(path):
    """The cubin with the ELF header fields an nvdisasm from before the newer ABI reads."""
    data = bytearray(open(path, 'rb').read())
    data[7], data[8] = 0x33, 7  # EI_OSABI (CUDA), EI_ABIVERSION
    struct.pack_into('<I', data, 0x30, 0x5A055A)  # e_flags: sm_90, virtual sm_90, 64-bit addresses
    older = path + '.abi7'
    open(older, 'wb').write(data)
    return older


def disassemble(nvdisasm, path):
    run = subprocess.run([nvdisasm, path], capture_output=True, text=True)
    if run.returncode != 0:
        run = subprocess.run([nvdisasm, as_older_abi(path)], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f'sass_counts: {nvdisasm} could not disassemble the cubin: {run.stderr.strip()}')
    return run.stdout


def functions(sass):
    """{mangled name: [(address, instruction)]} and each function's labels' addresses."""
    found, labels, current, pending = {}, {}, None, []
    for line in sass.splitlines():
        m = re.match(r'\s*\.text\.(\S+):', line)
        if m:
            current = m.group(1)
            found[current] = []
            continue
        m = re.match(r'\s*(\.L_x_\d+):', line)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;', line)
        if m and current:
            address = int(m.group(1), 16)
            for label in pending:
                labels[(current, label)] = address
            pending = []
            found[current].append((address, re.sub(r'^@!?U?P\w+\s+', '', m.group(2))))
    return found, labels


def main_loop(name, instructions, labels):
    """The instructions of the longest backward branch's body, NOPs left out."""
    loops = []
    for address, text in instructions:
        m = re.match(r'BRA\S*\s+`\((\.L_x_\d+)\)', text)
        target = labels.get((name, m.group(1))) if m else None
        if target is not None and target < address:
            loops.append((target, address))
    if not loops:
        return []
    first, last = max(loops, key=lambda loop: loop[1] - loop[0])
    return [text for address, text in instructions if first <= address <= last and not text.startswith('NOP')]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nvdisasm', default=shutil.which('nvdisasm'))
    parser.add_argument('--out', help='also write the table here')
    args = parser.parse_args()
    if not args.nvdisasm:
        sys.exit('sass_counts: no nvdisasm on PATH; name one with --nvdisasm')
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, 'mma_probe.sm_90.cubin')
        compile_cubin(cubin)
        found, labels = functions(disassemble(args.nvdisasm, cubin))
    rows = []
    for name, instructions in found.items():
        for pattern, describe in KERNELS:
            m = pattern.search(name)
            if m:
                kind, operand_bytes, variant, tiles = describe(*m.groups())
                body = main_loop(name, instructions, labels)
                ops = collections.Counter(text.split()[0].split('.')[0] for text in body)
                rows.append((kind, operand_bytes, variant, tiles, len(body), ops))
    rows.sort(key=lambda r: (['quantize', 'quantize up to', 'dequantize'].index(r[0]), -r[1], r[2], r[3]))
    lines = ['| kernel | operands | variant | tiles | SASS in the main loop | a value | most frequent |',
             '|---|---|---|---|---|---|---|']
    for kind, operand_bytes, variant, tiles, count, ops in rows:
        frequent = ', '.join(f'{op} {n}' for op, n in ops.most_common(6))
        lines.append(f'| {kind} | {8 * operand_bytes}-bit | {variant} | {tiles} | {count} | {count / (32 * tiles):.1f} | {frequent} |')
    table = '\n'.join(lines) + '\n'
    print(table, end='')
    if args.out:
        open(args.out, 'w').write(table)


if __name__ == '__main__':
    main()
