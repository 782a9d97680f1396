// Idempotent set-up of everything the build and the tests need. Each step checks first and
// only installs what is missing, so a re-run on a ready machine takes about a second.
//
//   node scripts/setup.mjs            Rust wasm target, wasm-bindgen-cli, wasm-pack, npm deps
//   node scripts/setup.mjs --browser  ... plus Debian chromium, chromium-driver and firefox-esr,
//                                     geckodriver (built once with `cargo install`), and
//                                     redis-server + haproxy (the cluster tests, issue 14)
//
// Only crates.io, npm and Debian's apt are reachable from our machines, so nothing here
// downloads prebuilt tools from GitHub: the Rust tools are built with `cargo install` (into
// Cargo's bin directory, where later runs find them: geckodriver takes minutes to build).

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ROOT, isMain, probe, run, runMain, step } from './lib/proc.mjs';

const WASM_TARGET = 'wasm32-unknown-unknown';
/** Debian packages of the browsers and the binary each installs. */
const BROWSER_PACKAGES = [
  { pkg: 'chromium', binary: '/usr/bin/chromium' },
  { pkg: 'chromium-driver', binary: '/usr/bin/chromedriver' },
  { pkg: 'firefox-esr', binary: '/usr/bin/firefox-esr' },
];
/** The geckodriver `cargo install` builds when none is found (WebDriver for Firefox). */
const GECKODRIVER_VERSION = '0.37.1';
/** Debian package → the binary it provides, for the cluster tests (issue 14). */
const CLUSTER_TOOLS = { 'redis-server': '/usr/bin/redis-server', haproxy: '/usr/sbin/haproxy' };

/**
 * Run every set-up step.
 * @param {{browser?: boolean}} [options] `browser`: also ensure Chromium, ChromeDriver,
 *   Firefox ESR and geckodriver
 */
export async function setup({ browser = false } = {}) {
  await ensureWasmTarget();
  await ensureWasmBindgenCli();
  await ensureWasmPack();
  await ensureNpmDeps();
  if (browser) {
    await ensureBrowser();
    await ensureGeckodriver();
    await ensureClusterTools();
  }
}

/** Add the `wasm32-unknown-unknown` rustup target unless it is installed. */
export async function ensureWasmTarget() {
  const installed = (probe('rustup', ['target', 'list', '--installed']) ?? '').split('\n');
  if (installed.includes(WASM_TARGET)) {
    step(`rust target ${WASM_TARGET}: present`);
    return;
  }
  step(`rust target ${WASM_TARGET}: adding`);
  await run('rustup', ['target', 'add', WASM_TARGET]);
}

/**
 * Install wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock (wasm-pack
 * refuses to mix versions, and would otherwise try to download the CLI from GitHub).
 */
export async function ensureWasmBindgenCli() {
  const wanted = await lockedWasmBindgenVersion();
  const found = probe('wasm-bindgen', ['--version'])?.split(/\s+/)[1];
  if (found === wanted) {
    step(`wasm-bindgen-cli ${wanted}: present`);
    return;
  }
  step(`wasm-bindgen-cli ${wanted}: installing (found ${found ?? 'none'})`);
  await cargoInstall('wasm-bindgen-cli', wanted);
}

/** Install wasm-pack unless some version of it is on PATH. */
export async function ensureWasmPack() {
  const found = probe('wasm-pack', ['--version']);
  if (found) {
    step(`${found}: present`);
    return;
  }
  step('wasm-pack: installing');
  await cargoInstall('wasm-pack');
}

/**
 * `npm ci` when node_modules is missing or was installed from a different package-lock.json.
 * npm keeps a copy of the lock it installed in node_modules/.package-lock.json; comparing the
 * package entries (path, version, integrity) of the two tells whether they match.
 */
export async function ensureNpmDeps() {
  const installed = join(ROOT, 'node_modules', '.package-lock.json');
  const current =
    existsSync(installed) &&
    lockedPackages(join(ROOT, 'package-lock.json')) === lockedPackages(installed);
  if (current) {
    step('npm dependencies: present');
    return;
  }
  step('npm dependencies: npm ci');
  try {
    await run('npm', ['ci', '--no-audit', '--no-fund']);
  } catch (err) {
    // msgpackr's optional native add-on lists one package per platform; registries that serve
    // only some platforms leave the others out of the lock, and `npm ci` then refuses the
    // lock as out of sync. `npm install` resolves the same versions and skips them.
    step(`npm dependencies: npm ci refused the lock (${err.message}); falling back to npm install`);
    await run('npm', ['install', '--no-audit', '--no-fund']);
  }
}

/** Install Debian's chromium, chromium-driver and firefox-esr, those whose binary is missing. */
export async function ensureBrowser() {
  const names = BROWSER_PACKAGES.map((p) => p.pkg).join(' + ');
  const missing = BROWSER_PACKAGES.filter((p) => !existsSync(p.binary));
  if (missing.length === 0) {
    step(`${names}: present`);
    return;
  }
  step(`${names}: installing with apt (missing ${missing.map((p) => p.binary).join(', ')})`);
  await aptGet(['update']);
  await aptGet(['install', '-y', ...missing.map((p) => p.pkg)]);
}

/**
 * Where geckodriver is: on PATH, or in Cargo's bin directory (`$CARGO_HOME/bin`, by default
 * ~/.cargo/bin, where `cargo install` puts it even when that is not on PATH).
 * @returns {string | null}
 */
export function geckodriverPath() {
  if (probe('geckodriver', ['--version'])) return 'geckodriver';
  const cargoBin = join(process.env.CARGO_HOME ?? join(homedir(), '.cargo'), 'bin', 'geckodriver');
  return existsSync(cargoBin) ? cargoBin : null;
}

/**
 * Build geckodriver with `cargo install` unless one is found (geckodriverPath). Debian has no
 * package of it, and its releases are GitHub downloads, which our machines cannot reach.
 */
export async function ensureGeckodriver() {
  const found = geckodriverPath();
  if (found) {
    step(`${probe(found, ['--version'])?.split('\n')[0]}: present`);
    return;
  }
  step(`geckodriver ${GECKODRIVER_VERSION}: installing (cargo install, a few minutes)`);
  await cargoInstall('geckodriver', GECKODRIVER_VERSION);
}

/**
 * Install Debian's redis-server and haproxy when missing: the cluster tests (native
 * server-stub/tests/cluster.rs and tests/cluster-*.spec.mjs) start them as child processes.
 */
export async function ensureClusterTools() {
  const missing = Object.entries(CLUSTER_TOOLS).filter(([, path]) => !existsSync(path));
  if (missing.length === 0) {
    step('redis-server + haproxy: present');
    return;
  }
  step(`redis-server + haproxy: installing with apt (missing ${missing.map(([p]) => p).join(', ')})`);
  await aptGet(['update']);
  await aptGet(['install', '-y', ...missing.map(([p]) => p)]);
}

/**
 * Read the wasm-bindgen version from Cargo.lock, creating the lock file first if needed.
 * @returns {Promise<string>}
 */
async function lockedWasmBindgenVersion() {
  const lockPath = join(ROOT, 'Cargo.lock');
  if (!existsSync(lockPath)) {
    step('Cargo.lock missing: cargo generate-lockfile');
    await run('cargo', ['generate-lockfile']);
  }
  const lock = readFileSync(lockPath, 'utf8');
  const match = /\[\[package\]\]\nname = "wasm-bindgen"\nversion = "([^"]+)"/.exec(lock);
  if (!match) throw new Error('Cargo.lock has no "wasm-bindgen" package; sdk/Cargo.toml should depend on it');
  return match[1];
}

/**
 * `cargo install <crate> --locked`, falling back to a fresh resolution when the crate's own
 * lock file names a version our crates.io index lacks (seen with wasm-bindgen-cli 0.2.130,
 * whose lock pins webpki-roots 1.0.11). Resolution fails in seconds, so the retry is cheap.
 * @param {string} crate
 * @param {string} [version] exact version; latest when omitted
 */
async function cargoInstall(crate, version) {
  const args = ['install', crate, ...(version ? ['--version', version] : [])];
  try {
    await run('cargo', [...args, '--locked']);
  } catch {
    step(`${crate}: --locked install failed; retrying with freshly resolved dependencies`);
    await run('cargo', args);
  }
}

/**
 * Run apt-get non-interactively, through sudo unless we are root.
 * @param {string[]} args
 */
function aptGet(args) {
  if (process.getuid?.() === 0) return run('apt-get', args, { env: { DEBIAN_FRONTEND: 'noninteractive' } });
  return run('sudo', ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', ...args]);
}

/**
 * The installed-package entries of an npm lock file, as a comparable string.
 * @param {string} path package-lock.json or node_modules/.package-lock.json
 */
function lockedPackages(path) {
  const { packages = {} } = JSON.parse(readFileSync(path, 'utf8'));
  return Object.entries(packages)
    // Optional platform packages are installed only on their platform: not part of the match.
    .filter(([key, entry]) => key.startsWith('node_modules/') && !entry.optional)
    .map(([key, entry]) => `${key}@${entry.version}#${entry.integrity ?? ''}`)
    .sort()
    .join('\n');
}

if (isMain(import.meta.url)) {
  runMain(() => setup({ browser: process.argv.includes('--browser') }));
}
