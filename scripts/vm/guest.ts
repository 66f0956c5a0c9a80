/**
 * Runs a shell script inside a throw-away QEMU guest that boots Debian
 * bookworm's stock kernel, for hosts whose kernel lacks what a test needs
 * (soft-dirty tracking for `criu pre-dump`, `sch_netem` for delays).
 *
 * Everything comes from Debian packages fetched with `apt-get download`
 * (nothing is installed on the host): qemu-system-x86 and the libraries the
 * host lacks, seabios, busybox-static and the current linux-image. They are
 * extracted once into the cache directory (`$LAZYD_VM_DIR`, default
 * `/var/cache/lazyd-vm`) and reused; the initramfs is rebuilt only when its
 * inputs change.
 *
 * The guest mounts the host's root filesystem read-only over 9p, so it runs
 * the host's CRIU (/opt/lazyd/criu-4.1.1), this checkout with its Deno,
 * bash, iproute2, rsync...; /tmp and /run are tmpfs; the run directory is
 * shared writable at /tmp/out (the script's cwd). The script runs as root
 * with lo up, devpts, cgroup2, fs.pipe-max-size at 4 MiB, `DENO_DIR` a
 * writable copy of the host's and `PATH` starting with this checkout's
 * `node_modules/.bin`.
 *
 * Accelerator: KVM when /dev/kvm works, else TCG (software emulation, 10-50x
 * slower). `LAZYD_VM_ACCEL` overrides (`kvm` or `tcg`).
 *
 * CLI: `deno run -A scripts/vm/guest.ts [--timeout S] [--mem MiB] [--smp N]
 * [--keep] (-c 'commands' | SCRIPT | --prepare)`; prints the script's output
 * and exits with its status (124 on timeout, 3 when the guest cannot be built
 * or booted). `--prepare` only downloads and builds.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { run as sh, type RunResult } from "../../tests/e2e/env.ts";
import { exists } from "../_util.ts";

/** The repository's root directory. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The cache directory for packages, the extracted tree and the initramfs. */
export function vmDir(): string {
  return Deno.env.get("LAZYD_VM_DIR") ?? "/var/cache/lazyd-vm";
}

/** Kernel modules the guest loads (with their dependencies), in order. */
const MODULES = [
  "virtio_pci",
  "virtio_net",
  "9p",
  "9pnet_virtio",
  "veth",
  "sch_netem",
  "nfnetlink",
  "unix_diag",
  "inet_diag",
  "tcp_diag",
  "udp_diag",
  "netlink_diag",
  "raw_diag",
  "af_packet_diag",
  "packet_diag",
  "tun",
];

/** Thrown when the guest cannot be built or booted. */
export class VmError extends Error {}

/** `run`, with a failure as the VmError that callers of this module expect. */
async function shOk(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const r = await sh(cmd, args, options);
  if (r.code !== 0) {
    throw new VmError(
      `${cmd} ${args.join(" ")} exited ${r.code}\n${r.stdout}${r.stderr}`,
    );
  }
  return r;
}

function log(msg: string): void {
  console.error(`vm: ${msg}`);
}

/** What {@linkcode prepareGuest} built. */
export interface GuestAssets {
  /** The cache directory. */
  dir: string;
  /** qemu-system-x86_64 from the extracted tree. */
  qemu: string;
  /** The library path qemu needs. */
  libraryPath: string;
  /** The BIOS/firmware search directories. */
  firmware: string[];
  /** The guest kernel and initramfs. */
  kernel: string;
  initrd: string;
  /** The guest kernel's release. */
  release: string;
}

async function downloadPackages(dir: string): Promise<void> {
  const debs = join(dir, "debs");
  Deno.mkdirSync(debs, { recursive: true });
  let dep = await sh("apt-cache", ["depends", "linux-image-amd64"]);
  if (!/Depends: linux-image-\d/.test(dep.stdout)) {
    log("apt-get update (no package index)");
    await shOk("apt-get", ["-q", "update"]);
    dep = await sh("apt-cache", ["depends", "linux-image-amd64"]);
  }
  const kpkg = dep.stdout.match(/Depends: (linux-image-\d\S*)/)?.[1];
  if (!kpkg) throw new VmError("cannot resolve linux-image-amd64");
  // The libraries qemu needs that the host lacks (a simulated install).
  const sim = await shOk("apt-get", [
    "install",
    "-s",
    "--no-install-recommends",
    "qemu-system-x86",
    "busybox-static",
  ]);
  const missing = [...sim.stdout.matchAll(/^Inst (\S+)/gm)].map((m) => m[1]);
  const pkgs = [
    ...new Set([
      "qemu-system-x86",
      "qemu-system-common",
      "qemu-system-data",
      "seabios",
      "ipxe-qemu",
      "busybox-static",
      kpkg,
      ...missing,
    ]),
  ].sort();
  log(`downloading ${pkgs.length} packages (kernel ${kpkg}) into ${debs}`);
  await shOk("apt-get", [
    "-q",
    "-o",
    "APT::Sandbox::User=root",
    "download",
    ...pkgs,
  ], { cwd: debs });
  const tree = join(dir, "root");
  const tmp = `${tree}.tmp`;
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* none */ }
  Deno.mkdirSync(tmp, { recursive: true });
  for (const e of Deno.readDirSync(debs)) {
    if (!e.name.endsWith(".deb")) continue;
    await shOk("dpkg-deb", ["-x", join(debs, e.name), tmp]);
  }
  try {
    Deno.removeSync(tree, { recursive: true });
  } catch { /* none */ }
  Deno.renameSync(tmp, tree);
}

function kernelRelease(tree: string): string | undefined {
  try {
    return [...Deno.readDirSync(join(tree, "lib", "modules"))].map((e) =>
      e.name
    ).sort().at(-1);
  } catch {
    return undefined;
  }
}

/** The modules to load and their order (dependencies first). */
function resolveModules(modDir: string): string[] {
  const dep = new Map<string, string[]>();
  for (
    const line of Deno.readTextFileSync(join(modDir, "modules.dep"))
      .split("\n")
  ) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    dep.set(line.slice(0, i), line.slice(i + 1).split(/\s+/).filter(Boolean));
  }
  const byName = new Map<string, string>();
  for (const k of dep.keys()) {
    const base = k.split("/").at(-1)!.replace(/\.ko(\.\w+)?$/, "");
    byName.set(base.replaceAll("-", "_"), k);
  }
  const order: string[] = [];
  const add = (k: string) => {
    if (order.includes(k)) return;
    for (const d of [...(dep.get(k) ?? [])].reverse()) add(d);
    if (!order.includes(k)) order.push(k);
  };
  for (const m of MODULES) {
    const k = byName.get(m);
    if (k) add(k);
  }
  return order;
}

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot ||
  { echo "LAZYD-VM: 9p root mount failed"; poweroff -f; }
mount -t tmpfs run /newroot/run
# The host root stays reachable at /run/hostroot once /tmp is covered, so
# that a checkout under the host's /tmp can be bound back (guest script).
mkdir -p /newroot/run/hostroot
mount -o bind /newroot /newroot/run/hostroot
mount -t tmpfs -o size=75% tmp /newroot/tmp
mkdir -p /newroot/tmp/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /newroot/tmp/out ||
  { echo "LAZYD-VM: 9p out mount failed"; poweroff -f; }
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t cgroup2 cg /newroot/sys/fs/cgroup 2>/dev/null
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /bin/bash /tmp/out/.guest.sh
`;

async function sha(text: string): Promise<string> {
  const d = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(new Uint8Array(d).slice(0, 8)).map((b) =>
    b.toString(16).padStart(2, "0")
  ).join("");
}

async function buildInitramfs(
  tree: string,
  release: string,
  out: string,
): Promise<void> {
  const modDir = join(tree, "lib", "modules", release);
  const busybox = join(tree, "bin", "busybox");
  if (!exists(join(modDir, "modules.dep"))) {
    await shOk(busybox, ["depmod", "-b", tree, release]);
  }
  const mods = resolveModules(modDir);
  const stamp = await sha(JSON.stringify({ INIT, mods, release }));
  if (
    exists(out) && exists(`${out}.stamp`) &&
    Deno.readTextFileSync(`${out}.stamp`) === stamp
  ) return;
  log(`building the initramfs (${mods.length} modules)`);
  const ini = `${out}.d`;
  try {
    Deno.removeSync(ini, { recursive: true });
  } catch { /* none */ }
  for (const d of ["bin", "mods", "proc", "sys", "dev", "newroot"]) {
    Deno.mkdirSync(join(ini, d), { recursive: true });
  }
  Deno.copyFileSync(busybox, join(ini, "bin", "busybox"));
  Deno.chmodSync(join(ini, "bin", "busybox"), 0o755);
  const names: string[] = [];
  for (const m of mods) {
    let name = m.split("/").at(-1)!;
    let src = join(modDir, m);
    // Debian 12 ships uncompressed modules; busybox insmod cannot unpack
    // compressed ones, so unpack them here should a newer kernel compress.
    if (name.endsWith(".ko.xz") || name.endsWith(".ko.zst")) {
      const unpacked = join(ini, "mods", name.replace(/\.(xz|zst)$/, ""));
      const tool = name.endsWith(".xz") ? "xz" : "zstd";
      await shOk("sh", ["-c", `${tool} -dc "$0" >"$1"`, src, unpacked]);
      name = name.replace(/\.(xz|zst)$/, "");
      src = unpacked;
    } else {
      Deno.copyFileSync(src, join(ini, "mods", name));
    }
    names.push(name);
  }
  Deno.writeTextFileSync(join(ini, "mods", "order"), names.join("\n") + "\n");
  Deno.writeTextFileSync(join(ini, "init"), INIT, { mode: 0o755 });
  Deno.chmodSync(join(ini, "init"), 0o755);
  await shOk("sh", [
    "-c",
    'cd "$1" && find . | "$0" cpio -o -H newc 2>/dev/null | gzip -1 >"$2.tmp" && mv "$2.tmp" "$2"',
    busybox,
    ini,
    out,
  ]);
  Deno.writeTextFileSync(`${out}.stamp`, stamp);
  Deno.removeSync(ini, { recursive: true });
}

/**
 * Downloads and extracts the packages (once) and builds the initramfs
 * (when its inputs changed). Serialised by a lock in the cache directory.
 */
export async function prepareGuest(): Promise<GuestAssets> {
  if (Deno.uid() !== 0) throw new VmError("the VM needs root");
  const dir = vmDir();
  Deno.mkdirSync(dir, { recursive: true });
  const lock = await Deno.open(join(dir, ".lock"), {
    create: true,
    write: true,
  });
  await lock.lock(true);
  try {
    const tree = join(dir, "root");
    const qemu = join(tree, "usr", "bin", "qemu-system-x86_64");
    let release = kernelRelease(tree);
    if (
      !exists(qemu) || !exists(join(tree, "bin", "busybox")) || !release ||
      !exists(join(tree, "boot", `vmlinuz-${release}`))
    ) {
      await downloadPackages(dir);
      release = kernelRelease(tree);
    }
    if (!release) throw new VmError(`no kernel modules in ${tree}`);
    const kernel = join(tree, "boot", `vmlinuz-${release}`);
    if (!exists(kernel)) throw new VmError(`no kernel image ${kernel}`);
    const libraryPath = [
      join(tree, "usr", "lib", "x86_64-linux-gnu"),
      join(tree, "lib", "x86_64-linux-gnu"),
    ].join(":");
    const ldd = await sh("ldd", [qemu], {
      env: { LD_LIBRARY_PATH: libraryPath },
    });
    if (ldd.code !== 0 || ldd.stdout.includes("not found")) {
      throw new VmError(
        `qemu has unresolved libraries:\n${
          ldd.stdout.split("\n").filter((l) => l.includes("not found")).join(
            "\n",
          )
        }${ldd.stderr}`,
      );
    }
    const initrd = join(dir, "initrd.gz");
    await buildInitramfs(tree, release, initrd);
    return {
      dir,
      qemu,
      libraryPath,
      firmware: [
        join(tree, "usr", "share", "seabios"),
        join(tree, "usr", "share", "qemu"),
      ],
      kernel,
      initrd,
      release,
    };
  } finally {
    await lock.unlock();
    lock.close();
  }
}

/** Parses the `VMRESULT {json}` lines a scenario printed. */
export function parseResults<T>(output: string): T[] {
  return output.split("\n").filter((l) => l.startsWith("VMRESULT "))
    .map((l) => JSON.parse(l.slice("VMRESULT ".length)) as T);
}

/** Options of {@linkcode runInGuest}. */
export interface GuestOptions {
  /** Guest memory in MiB (default 2048). */
  memMiB?: number;
  /** Virtual CPUs (default 2). */
  smp?: number;
  /** Seconds before the guest is killed (default 900). */
  timeoutSec?: number;
  /** The shared directory (default a fresh one under the cache's runs/). */
  shareDir?: string;
  /** Environment variables exported to the script. */
  env?: Record<string, string>;
  /** Streams the script's output to stderr as it comes. */
  echo?: boolean;
  /**
   * Keeps the shared directory created under the cache's runs/ when the
   * script succeeded (it is always kept when it failed, and a `shareDir`
   * given by the caller is never removed).
   */
  keep?: boolean;
}

/** What {@linkcode runInGuest} returns. */
export interface GuestResult {
  /** The script's exit status (124 when the guest timed out). */
  code: number;
  /** The script's stdout and stderr, interleaved. */
  output: string;
  /** True when the guest was killed at the timeout. */
  timedOut: boolean;
  /** Wall-clock milliseconds from qemu start to exit. */
  durationMs: number;
  /** Milliseconds from qemu start until the script started. */
  bootMs?: number;
  /** The shared directory (the script's /tmp/out and cwd). */
  shareDir: string;
  /** The guest's console (serial) log, in the shared directory. */
  consoleLog: string;
  /** The console's text. */
  console: string;
  /** The guest kernel's release and the accelerator used. */
  release: string;
  accel: string;
}

function hostDenoDir(): string {
  return Deno.env.get("DENO_DIR") ??
    join(Deno.env.get("HOME") ?? "/root", ".cache", "deno");
}

function guestScript(env: Record<string, string>): string {
  const exports = Object.entries(env).map(([k, v]) =>
    `export ${k}='${v.replaceAll("'", `'\\''`)}'`
  ).join("\n");
  return `#!/bin/bash
export PATH=${ROOT}/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home TMPDIR=/tmp LAZYD_IN_VM=1 DENO_NO_UPDATE_CHECK=1
mkdir -p /tmp/home
echo "LAZYD-VM: script start $(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs shm /dev/shm
echo 4194304 >/proc/sys/fs/pipe-max-size
# The tmpfs on /tmp hides a checkout that lives under the host's /tmp (CI
# may clone there): bind it back from the host root kept at /run/hostroot.
case '${ROOT}' in /tmp/*)
  mkdir -p '${ROOT}'
  mount --bind '/run/hostroot${ROOT}' '${ROOT}' ||
    echo "LAZYD-VM: cannot bind ${ROOT} back over the guest's /tmp"
  ;;
esac
if [ -d '${hostDenoDir()}' ]; then
  mkdir -p /tmp/deno-dir && cp -a '${hostDenoDir()}/.' /tmp/deno-dir/ 2>/dev/null
  export DENO_DIR=/tmp/deno-dir
fi
${exports}
cd /tmp/out
bash /tmp/out/.job.sh </dev/null 2>&1 | tee /tmp/out/.job.log
echo "\${PIPESTATUS[0]}" >/tmp/out/.job.rc
echo "LAZYD-VM: script done rc=$(cat /tmp/out/.job.rc)"
sync
echo o >/proc/sysrq-trigger
sleep 30
`;
}

function kvmUsable(): boolean {
  const want = Deno.env.get("LAZYD_VM_ACCEL");
  if (want === "tcg") return false;
  if (want === "kvm") return true;
  try {
    const f = Deno.openSync("/dev/kvm", { read: true, write: true });
    f.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Boots the guest, runs `script` (bash) in it and returns its output and
 * status. Throws {@linkcode VmError} when the guest cannot be built or does
 * not boot.
 */
export async function runInGuest(
  script: string,
  options: GuestOptions = {},
): Promise<GuestResult> {
  const a = await prepareGuest();
  const share = options.shareDir ??
    join(a.dir, "runs", `${Date.now()}-${Deno.pid}`);
  Deno.mkdirSync(share, { recursive: true });
  for (const f of [".job.rc", ".job.log"]) {
    try {
      Deno.removeSync(join(share, f));
    } catch { /* none */ }
  }
  Deno.writeTextFileSync(join(share, ".job.sh"), script);
  Deno.writeTextFileSync(
    join(share, ".guest.sh"),
    guestScript(options.env ?? {}),
    { mode: 0o755 },
  );
  const kvm = kvmUsable();
  const accel = kvm
    ? ["-enable-kvm", "-cpu", "host"]
    : ["-accel", "tcg,thread=multi", "-cpu", "max"];
  const consoleLog = join(share, ".console.log");
  const timeoutSec = options.timeoutSec ?? 900;
  const args = [
    ...accel,
    "-smp",
    String(options.smp ?? 2),
    "-m",
    String(options.memMiB ?? 2048),
    "-nographic",
    "-no-reboot",
    ...a.firmware.flatMap((d) => ["-L", d]),
    "-kernel",
    a.kernel,
    "-initrd",
    a.initrd,
    "-append",
    "console=ttyS0 panic=1 loglevel=3",
    "-virtfs",
    "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    "-virtfs",
    `local,path=${share},mount_tag=out,security_model=none`,
    "-nic",
    "none",
  ];
  const t0 = Date.now();
  const con = Deno.openSync(consoleLog, {
    create: true,
    write: true,
    truncate: true,
  });
  const proc = new Deno.Command(a.qemu, {
    args,
    env: { LD_LIBRARY_PATH: a.libraryPath },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      proc.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutSec * 1000);
  let bootMs: number | undefined;
  const dec = new TextDecoder();
  let seen = "";
  const pump = async (s: ReadableStream<Uint8Array>, echo: boolean) => {
    for await (const chunk of s) {
      con.writeSync(chunk);
      if (bootMs === undefined) {
        // The marker can straddle chunks: keep a short tail.
        seen = (seen + dec.decode(chunk)).slice(-200);
        if (seen.includes("LAZYD-VM: script start")) {
          bootMs = Date.now() - t0;
        }
      }
      if (echo) await Deno.stderr.write(chunk);
    }
  };
  await Promise.all([
    pump(proc.stdout, options.echo ?? false),
    pump(proc.stderr, options.echo ?? false),
  ]);
  const st = await proc.status;
  clearTimeout(timer);
  con.close();
  const durationMs = Date.now() - t0;
  const consoleText = Deno.readTextFileSync(consoleLog);
  let output = "";
  try {
    output = Deno.readTextFileSync(join(share, ".job.log"));
  } catch { /* never started */ }
  let code: number;
  try {
    code = Number(Deno.readTextFileSync(join(share, ".job.rc")).trim());
  } catch {
    if (timedOut) {
      code = 124;
    } else {
      throw new VmError(
        `the guest ended (qemu status ${st.code}) without running the ` +
          `script; console:\n${consoleText.slice(-3000)}`,
      );
    }
  }
  if (code === 0 && !options.shareDir && !options.keep) {
    Deno.removeSync(share, { recursive: true });
  }
  return {
    code,
    output,
    timedOut,
    durationMs,
    bootMs,
    shareDir: share,
    consoleLog,
    console: consoleText,
    release: a.release,
    accel: kvm ? "kvm" : "tcg",
  };
}

if (import.meta.main) {
  const argv = [...Deno.args];
  const opts: GuestOptions = { echo: true };
  let script: string | undefined;
  while (argv.length) {
    const a = argv.shift()!;
    if (a === "--timeout") opts.timeoutSec = Number(argv.shift());
    else if (a === "--mem") opts.memMiB = Number(argv.shift());
    else if (a === "--smp") opts.smp = Number(argv.shift());
    else if (a === "--keep") opts.keep = true;
    else if (a === "--prepare") script = "";
    else if (a === "-c") script = argv.shift();
    else if (a === "-h" || a === "--help") {
      console.log(
        "usage: guest.ts [--timeout S] [--mem MiB] [--smp N] [--keep] (-c 'commands' | SCRIPT | --prepare)",
      );
      Deno.exit(0);
    } else script = Deno.readTextFileSync(a);
  }
  if (script === undefined) {
    console.error("guest.ts: give -c 'commands', a script file or --prepare");
    Deno.exit(2);
  }
  try {
    if (script === "") {
      const a = await prepareGuest();
      console.log(`ready: kernel ${a.release}, ${a.kernel}, ${a.initrd}`);
      Deno.exit(0);
    }
    const r = await runInGuest(script, opts);
    console.error(
      `vm: ${r.accel}, kernel ${r.release}, boot ${
        r.bootMs ?? "?"
      } ms, total ${r.durationMs} ms, status ${r.code}${
        r.timedOut ? " (timed out)" : ""
      }; share ${r.shareDir}`,
    );
    Deno.exit(r.code);
  } catch (e) {
    console.error(`guest.ts: ${e instanceof Error ? e.message : e}`);
    Deno.exit(e instanceof VmError ? 3 : 1);
  }
}
