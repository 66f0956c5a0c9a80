/**
 * AF_UNIX stream sockets: the listening socket for `criu restore`, peer
 * credentials, exact reads and SCM_RIGHTS fd passing (both directions, so
 * tests can play the restorer).
 *
 * x86_64 layouts used here:
 *
 * - `struct msghdr` (56 bytes): msg_name ptr @0, msg_namelen u32 @8,
 *   msg_iov ptr @16, msg_iovlen u64 @24, msg_control ptr @32,
 *   msg_controllen u64 @40, msg_flags i32 @48.
 * - `struct iovec` (16 bytes): iov_base ptr @0, iov_len u64 @8.
 * - `struct cmsghdr` (16 bytes): cmsg_len u64 @0, cmsg_level i32 @8,
 *   cmsg_type i32 @12, then data. One fd: CMSG_LEN(4) = 20,
 *   CMSG_SPACE(4) = 24.
 * - `struct ucred` (12 bytes): pid i32, uid u32, gid u32.
 *
 * @module
 */
import { check, E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";
import { getU64, type Scratch, scratch, setU64 } from "./buffer.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
/** `SOCK_CLOEXEC` (= O_CLOEXEC). */
export const SOCK_CLOEXEC = 0o2000000;
/** `SOCK_NONBLOCK` (= O_NONBLOCK). */
export const SOCK_NONBLOCK = 0o4000;
/** `SOL_SOCKET` level. */
export const SOL_SOCKET = 1;
/** `SO_PEERCRED` option. */
export const SO_PEERCRED = 17;
/** `SCM_RIGHTS` control message type. */
export const SCM_RIGHTS = 1;
/** `MSG_CTRUNC`: control data was truncated (set in msg_flags by recvmsg). */
export const MSG_CTRUNC = 0x8;
/** `MSG_CMSG_CLOEXEC`: received fds get O_CLOEXEC. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** `MSG_NOSIGNAL`: EPIPE instead of SIGPIPE. */
export const MSG_NOSIGNAL = 0x4000;

const CMSG_HDR = 16;
/** `CMSG_LEN(n)`: a cmsghdr plus `n` data bytes, unpadded. */
export function cmsgLen(n: number): number {
  return CMSG_HDR + n;
}
/** `CMSG_SPACE(n)`: a cmsghdr plus `n` data bytes, padded to 8. */
export function cmsgSpace(n: number): number {
  return CMSG_HDR + Math.ceil(n / 8) * 8;
}

/** Largest control buffer accepted by {@linkcode recvFd}'s `controlLen`. */
const CONTROL_MAX = 128;
const DATA_MAX = 4096;
const SUN_PATH_MAX = 108;

const encoder = new TextEncoder();

function sockaddrUn(path: string): Uint8Array {
  const p = encoder.encode(path);
  if (p.length === 0 || p.length >= SUN_PATH_MAX || p.includes(0)) {
    throw new RangeError(
      `unix socket path must be 1..${SUN_PATH_MAX - 1} bytes without NUL: ${
        JSON.stringify(path)
      }`,
    );
  }
  const addr = new Uint8Array(2 + p.length + 1); // sun_family, path, NUL
  addr[0] = AF_UNIX; // sa_family_t, little-endian u16
  addr.set(p, 2);
  return addr;
}

function unixSocket(flags: number): number {
  return check(
    libc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0),
    "socket",
  );
}

function closeQuietly(fd: number): void {
  libc().close(fd);
}

/**
 * Binds and listens on a filesystem AF_UNIX stream socket at `path`
 * (relative paths resolve against the current directory, as CRIU's do),
 * close-on-exec and blocking. Like CRIU, any existing non-directory at
 * `path` is removed first. If `mode` is given the socket file is chmod'ed
 * before `listen`, so nobody can connect through wider permissions.
 * Returns the listening fd. Throws SysError or a Deno error.
 */
export function listenUnix(
  path: string,
  options: { backlog?: number; mode?: number } = {},
): number {
  const addr = sockaddrUn(path);
  try {
    if (!Deno.lstatSync(path).isDirectory) Deno.removeSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const fd = unixSocket(0);
  try {
    check(libc().bind(fd, addr, addr.length), `bind(${path})`);
    if (options.mode !== undefined) Deno.chmodSync(path, options.mode);
    check(libc().listen(fd, options.backlog ?? 10), "listen");
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
  return fd;
}

/** Connects a new blocking close-on-exec AF_UNIX stream socket to `path`. Throws SysError. */
export function connectUnix(path: string): number {
  const addr = sockaddrUn(path);
  const fd = unixSocket(0);
  for (;;) {
    if (libc().connect(fd, addr, addr.length) === 0) return fd;
    const e = errno();
    if (e === E.EINTR) continue;
    closeQuietly(fd);
    throw new SysError(`connect(${path})`, e);
  }
}

/**
 * Accepts one connection (`accept4` with SOCK_CLOEXEC). Blocks the JS
 * thread if `fd` is blocking and nobody has connected yet. Retries EINTR
 * and ECONNABORTED; throws SysError (EAGAIN on a non-blocking fd).
 */
export function acceptOne(fd: number): number {
  for (;;) {
    const c = libc().accept4(fd, null, null, SOCK_CLOEXEC);
    if (c >= 0) return c;
    const e = errno();
    if (e !== E.EINTR && e !== E.ECONNABORTED) throw new SysError("accept4", e);
  }
}

/** A connected pair of AF_UNIX stream sockets (close-on-exec), e.g. to simulate the restorer. */
export function socketpair(
  options: { nonblocking?: boolean } = {},
): [number, number] {
  const sv = new Int32Array(2);
  const flags = SOCK_CLOEXEC | (options.nonblocking ? SOCK_NONBLOCK : 0);
  check(
    libc().socketpair(
      AF_UNIX,
      SOCK_STREAM | flags,
      0,
      new Uint8Array(sv.buffer),
    ),
    "socketpair",
  );
  return [sv[0], sv[1]];
}

/** Credentials of a unix socket's peer at connect time. */
export interface PeerCred {
  /** Peer pid (in our pid namespace). */
  pid: number;
  /** Peer effective uid. */
  uid: number;
  /** Peer effective gid. */
  gid: number;
}

let credStruct: Scratch | undefined; // ucred @0 (12 bytes), socklen_t @12
let credLenPtr: Deno.PointerObject | undefined;

/** `getsockopt(SO_PEERCRED)`: who is on the other end. Throws SysError. */
export function peerCred(fd: number): PeerCred {
  const s = (credStruct ??= scratch(16));
  credLenPtr ??= Deno.UnsafePointer.offset(s.pointer, 12) as Deno.PointerObject;
  s.bytes.fill(0);
  s.view.setUint32(12, 12, true);
  check(
    libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, s.pointer, credLenPtr),
    "getsockopt(SO_PEERCRED)",
  );
  return {
    pid: s.view.getInt32(0, true),
    uid: s.view.getUint32(4, true),
    gid: s.view.getUint32(8, true),
  };
}

/** One msghdr + iovec + data + control area, wired together once. */
interface MsgScratch {
  hdr: Scratch;
  iov: Scratch;
  data: Scratch;
  control: Scratch;
}

function msgScratch(): MsgScratch {
  const m = {
    hdr: scratch(56),
    iov: scratch(16),
    data: scratch(DATA_MAX),
    control: scratch(CONTROL_MAX),
  };
  setU64(m.hdr.view, 16, m.iov.address); // msg_iov
  setU64(m.hdr.view, 24, 1); // msg_iovlen
  setU64(m.hdr.view, 32, m.control.address); // msg_control
  setU64(m.iov.view, 0, m.data.address); // iov_base
  return m;
}

let recvArea: MsgScratch | undefined;
let sendArea: MsgScratch | undefined;

/**
 * One `recvmsg` of at most `dataLen` bytes with a control buffer of
 * `controlLen` bytes. Resets the in/out fields the kernel rewrites
 * (msg_controllen, msg_flags) every time. Returns the byte count (0 = EOF).
 */
function recvmsgOnce(
  fd: number,
  m: MsgScratch,
  dataLen: number,
  controlLen: number,
): number {
  setU64(m.iov.view, 8, dataLen);
  setU64(m.hdr.view, 40, controlLen);
  m.hdr.view.setInt32(48, 0, true);
  for (;;) {
    const n = libc().recvmsg(fd, m.hdr.pointer, MSG_CMSG_CLOEXEC);
    if (n >= 0n) return Number(n);
    const e = errno();
    if (e !== E.EINTR) throw new SysError("recvmsg", e);
  }
}

interface Control {
  fds: number[];
  truncated: boolean;
  other: string[];
}

/** Walks the control messages recvmsg left behind. */
function parseControl(m: MsgScratch): Control {
  const used = getU64(m.hdr.view, 40, "msg_controllen");
  const flags = m.hdr.view.getInt32(48, true);
  const v = m.control.view;
  const out: Control = {
    fds: [],
    truncated: (flags & MSG_CTRUNC) !== 0,
    other: [],
  };
  let off = 0;
  while (off + CMSG_HDR <= used) {
    const len = getU64(v, off, "cmsg_len");
    if (len < CMSG_HDR || off + len > used) break;
    const level = v.getInt32(off + 8, true);
    const type = v.getInt32(off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) {
        out.fds.push(v.getInt32(p, true));
      }
    } else {
      out.other.push(`level ${level} type ${type} len ${len}`);
    }
    off += Math.ceil(len / 8) * 8;
  }
  return out;
}

/**
 * Reads exactly `n` bytes from a blocking stream socket, looping over short
 * reads. Returns `null` on EOF before the first byte; throws `Error` on EOF
 * after a partial read, and if a file descriptor arrives with the data
 * (that means the reader and the peer disagree about the record layout;
 * the fd is closed rather than leaked). Uses `recvmsg` with a control
 * buffer because a plain `read` would make the kernel silently close any
 * fd it runs into. Throws SysError for socket errors.
 */
export function recvExact(fd: number, n: number): Uint8Array | null {
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new RangeError(`recvExact: bad length ${n}`);
  }
  const m = (recvArea ??= msgScratch());
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const chunk = Math.min(n - got, DATA_MAX);
    const r = recvmsgOnce(fd, m, chunk, cmsgSpace(4));
    const ctl = parseControl(m);
    if (ctl.fds.length > 0 || ctl.truncated) {
      for (const f of ctl.fds) closeQuietly(f);
      throw new Error(
        `recvExact: unexpected SCM_RIGHTS data after ${got + r} of ${n} bytes`,
      );
    }
    if (r === 0) {
      if (got === 0) return null;
      throw new Error(`recvExact: EOF after ${got} of ${n} bytes`);
    }
    out.set(m.data.bytes.subarray(0, r), got);
    got += r;
  }
  return out;
}

/** A file descriptor received with {@linkcode recvFd}. */
export interface ReceivedFd {
  /** The new fd (close-on-exec). */
  fd: number;
  /** The data byte it was attached to (CRIU sends 0). */
  byte: number;
}

/**
 * Receives one data byte carrying exactly one SCM_RIGHTS fd, as
 * `criu restore` sends a uffd (`msg_controllen` = CMSG_LEN(4) = 20 on the
 * sender's side is fine). Uses MSG_CMSG_CLOEXEC and, by default, a
 * CMSG_SPACE(4) = 24 byte control buffer; `controlLen` (16..128) exists so
 * tests can provoke truncation. Throws `Error` naming the problem — EOF,
 * no control message, MSG_CTRUNC (the kernel then discards the fds it
 * could not deliver), a control message of the wrong level/type, or more
 * than one fd (all closed) — and SysError for socket errors.
 */
export function recvFd(
  fd: number,
  options: { controlLen?: number } = {},
): ReceivedFd {
  const controlLen = options.controlLen ?? cmsgSpace(4);
  if (
    !Number.isInteger(controlLen) || controlLen < 0 || controlLen > CONTROL_MAX
  ) {
    throw new RangeError(`recvFd: controlLen must be 0..${CONTROL_MAX}`);
  }
  const m = (recvArea ??= msgScratch());
  const r = recvmsgOnce(fd, m, 1, controlLen);
  const ctl = parseControl(m);
  const fail = (why: string): never => {
    for (const f of ctl.fds) closeQuietly(f);
    throw new Error(`recvFd: ${why}`);
  };
  if (ctl.truncated) {
    fail(
      `control data truncated (MSG_CTRUNC) with a ${controlLen}-byte control buffer; ` +
        `the kernel discarded the fd(s) it could not deliver`,
    );
  }
  if (r === 0) fail("EOF instead of the fd-carrying byte");
  if (ctl.fds.length === 0) {
    fail(
      ctl.other.length > 0
        ? `expected SOL_SOCKET/SCM_RIGHTS, got ${ctl.other.join(", ")}`
        : "no SCM_RIGHTS control message with the byte",
    );
  }
  if (ctl.fds.length !== 1) fail(`expected one fd, got ${ctl.fds.length}`);
  return { fd: ctl.fds[0], byte: m.data.bytes[0] };
}

/**
 * Sends one data byte (`payload`, default 0) with `fds` (one fd or
 * several) as SCM_RIGHTS, like CRIU's `send_fds`: `msg_controllen`
 * defaults to CMSG_LEN(4 * count) (20 for one fd), not CMSG_SPACE. Uses
 * MSG_NOSIGNAL. For tests and tools. Throws SysError.
 */
export function sendFd(
  fd: number,
  fds: number | readonly number[],
  options: { payload?: number; controlLen?: number } = {},
): void {
  const list = typeof fds === "number" ? [fds] : fds;
  const len = cmsgLen(4 * list.length);
  const controlLen = options.controlLen ?? len;
  if (cmsgSpace(4 * list.length) > CONTROL_MAX || controlLen > CONTROL_MAX) {
    throw new RangeError("sendFd: too many fds");
  }
  const m = (sendArea ??= msgScratch());
  m.data.bytes[0] = options.payload ?? 0;
  setU64(m.iov.view, 8, 1);
  const c = m.control.view;
  m.control.bytes.fill(0);
  setU64(c, 0, len);
  c.setInt32(8, SOL_SOCKET, true);
  c.setInt32(12, SCM_RIGHTS, true);
  list.forEach((f, i) => c.setInt32(CMSG_HDR + 4 * i, f, true));
  setU64(m.hdr.view, 40, controlLen);
  m.hdr.view.setInt32(48, 0, true);
  for (;;) {
    const n = libc().sendmsg(fd, m.hdr.pointer, MSG_NOSIGNAL);
    if (n >= 0n) return;
    const e = errno();
    if (e !== E.EINTR) throw new SysError("sendmsg", e);
  }
}
