// Builds build/spillway.node from addon/src and kernels/ with g++ (and nvcc where found).
// Kept as a plain script rather than node-gyp so that CUDA objects and the static cudart
// link are explicit. SPILLWAY_CUDA=0 forces a host-only build; SPILLWAY_CUDA=1 makes a
// missing nvcc an error instead of a host-only build.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addonSrc = join(root, 'addon', 'src');
const out = join(root, 'build');
const objDir = join(out, 'obj');
mkdirSync(objDir, { recursive: true });

function findNodeHeaders() {
  const candidates = [
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ];
  const found = candidates.find((dir) => existsSync(join(dir, 'node_api.h')));
  if (!found) throw new Error(`addon build: node_api.h not found in ${candidates.join(', ')}`);
  return found;
}

function findNvcc() {
  if (process.env.SPILLWAY_CUDA === '0') return null;
  const candidates = [process.env.NVCC, '/usr/local/cuda/bin/nvcc'];
  try {
    candidates.push(execFileSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).trim());
  } catch {
    // not on PATH
  }
  const nvcc = candidates.find((p) => p && existsSync(p));
  if (!nvcc && process.env.SPILLWAY_CUDA === '1') throw new Error('addon build: SPILLWAY_CUDA=1 but nvcc not found');
  return nvcc ?? null;
}

function cpuFlags() {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const has = (f) => new RegExp(`\\b${f}\\b`).test(info);
    // The GPU hosts we run on and CI's machines all have AVX2/FMA/F16C; fall back to the
    // baseline ISA elsewhere rather than emit instructions the build machine lacks.
    return ['avx2', 'fma', 'f16c', 'sse4_2'].every(has) ? ['-mavx2', '-mfma', '-mf16c', '-msse4.2'] : [];
  } catch {
    return [];
  }
}

const require = createRequire(import.meta.url);
const napiInclude = require('node-addon-api').include_dir;
const nodeInclude = findNodeHeaders();
const nvcc = findNvcc();
const cudaHome = nvcc ? resolve(dirname(nvcc), '..') : null;
const withCuda = Boolean(nvcc);

const defines = ['-DNAPI_VERSION=8', '-DNODE_ADDON_API_DISABLE_DEPRECATED', '-DNAPI_CPP_EXCEPTIONS'];
if (withCuda) defines.push('-DSW_WITH_CUDA=1');
const includes = [`-I${nodeInclude}`, `-I${napiInclude}`, `-I${join(root, 'kernels')}`, `-I${addonSrc}`];
if (withCuda) includes.push(`-I${join(cudaHome, 'include')}`);
const cxxFlags = ['-O3', '-std=c++17', '-fPIC', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wno-unused-parameter', ...cpuFlags()];

// Files under `dir` and its subfolders whose names end in one of `extensions`, as full paths.
const filesIn = (dir, extensions) => readdirSync(dir, { recursive: true })
  .filter((f) => extensions.some((ext) => f.endsWith(ext))).sort().map((f) => join(dir, f));
const newestHeader = (dirs) => Math.max(0, ...dirs.flatMap((dir) => filesIn(dir, ['.h', '.hpp', '.cuh']).map((f) => statSync(f).mtimeMs)));
// Host sources may include headers from both folders; CUDA sources only from kernels/.
const hostHeaders = newestHeader([join(root, 'kernels'), addonSrc]);
const kernelHeaders = newestHeader([join(root, 'kernels')]);
const flagsStamp = JSON.stringify({ withCuda, cxxFlags, defines });

function upToDate(src, obj, headersTime) {
  return existsSync(obj) && statSync(obj).mtimeMs > Math.max(statSync(src).mtimeMs, headersTime);
}

function run(cmd, args) {
  console.log(`  ${cmd.split('/').pop()} ${args[args.indexOf('-c') + 1] ?? args[args.indexOf('-o') + 1]}`.replace(root + '/', ''));
  execFileSync(cmd, args, { stdio: 'inherit' });
}

// Rebuild everything when the flags change (for example nvcc appeared or went away).
const stampFile = join(objDir, 'flags.json');
const flagsChanged = !existsSync(stampFile) || readFileSync(stampFile, 'utf8') !== flagsStamp;

// The addon's sources sit in folders by concern (core/, io/, gpu/, host/); includes name
// them from addon/src, as "io/disk_io.h".
const sources = [...filesIn(addonSrc, ['.cc']), ...filesIn(join(root, 'kernels'), ['.cpp'])];
const cudaSources = withCuda ? filesIn(join(root, 'kernels'), ['.cu']) : [];

console.log(`addon: building ${withCuda ? `with CUDA (${nvcc})` : 'host-only (nvcc not found)'}`);
const objects = [];
for (const src of sources) {
  const obj = join(objDir, src.slice(root.length + 1).replace(/[/.]/g, '_') + '.o');
  if (flagsChanged || !upToDate(src, obj, hostHeaders)) run('g++', [...cxxFlags, ...defines, ...includes, '-c', src, '-o', obj]);
  objects.push(obj);
}
for (const src of cudaSources) {
  const obj = join(objDir, src.slice(root.length + 1).replace(/[/.]/g, '_') + '.o');
  if (flagsChanged || !upToDate(src, obj, kernelHeaders)) {
    run(nvcc, [
      '-O3', '-std=c++17', '-Xcompiler', '-fPIC', '-Xcompiler', '-fvisibility=hidden',
      '-gencode', 'arch=compute_80,code=sm_80',
      '-gencode', 'arch=compute_90a,code=sm_90a',
      '-gencode', 'arch=compute_90,code=compute_90',
      `-I${join(root, 'kernels')}`, '-c', src, '-o', obj,
    ]);
  }
  objects.push(obj);
}

const libs = ['-ldl', '-lpthread', '-lrt'];
if (withCuda) libs.unshift(`-L${join(cudaHome, 'lib64')}`, `-L${join(cudaHome, 'targets', 'x86_64-linux', 'lib')}`, '-lcudart_static');
run('g++', ['-shared', '-o', join(out, 'spillway.node'), ...objects, ...libs, '-Wl,--as-needed']);
writeFileSync(stampFile, flagsStamp);
writeFileSync(join(out, 'build-info.json'), JSON.stringify({ cuda: withCuda, nvcc, builtAt: new Date().toISOString() }, null, 2));
console.log(`addon: wrote build/spillway.node (${withCuda ? 'CUDA kernels included' : 'host-only'})`);
