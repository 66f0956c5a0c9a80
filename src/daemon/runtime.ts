/**
 * The daemon's runtime: it owns the sockets, the userfaultfds and the one
 * loop that serves them, on a thread of its own (see `worker.ts`).
 *
 * The loop is synchronous on purpose. It parks in one `epoll_wait` over
 * every uffd, every process's pidfd, the restore socket and a control
 * eventfd, and when woken it reads each uffd until EAGAIN (up to 64
 * messages per read) and answers every fault with a synchronous
 * UFFDIO_COPY. One `await` per fault would cost more than the copy itself.
 * While background work is pending the wait polls (timeout 0) between
 * chunks, so faults are always served first; with nothing pending it
 * blocks, so an idle daemon uses no CPU.
 *
 * @module
 */
import {
  acceptOne,
  closeFd,
  E,
  Epoll,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  eventfdRead,
  getuid,
  listenUnix,
  peerCred,
  pidfdOpen,
  pidfdSendSignal,
  readFd,
  readMessages,
  recvExact,
  recvFd,
  setNonblocking,
  SIG,
  SysError,
  type UffdEvent,
  writeFd,
} from "../../ffi/mod.ts";
import { ImageDir, ImageError } from "../images/mod.ts";
import { copyRanges } from "../lazy/mod.ts";
import {
  type Chunk,
  LocalSource,
  type PageSource,
  RemoteSource,
  SourceError,
  type TlsOptions,
} from "../source/mod.ts";
import { childrenOf, findHostPid, isLive } from "./host_pid.ts";
import { Logger, now } from "./log.ts";
import {
  type Outcome,
  Pager,
  type PagerOptions,
  type Pending,
} from "./pager.ts";
import { makePlan, type Plan } from "./plan.ts";
import { LazyProcess, type ProcessEnd } from "./process.ts";

/** The word restore sends once every process is restored ("FTSR" on the wire). */
export const RESTORE_FINISHED = 0x52535446;

/** Everything the runtime needs; plain data, so it can cross to a worker. */
export interface RuntimeConfig {
  /** Images directory (-D), absolute. */
  imagesDir: string;
  /** Work directory (-W): where the socket and relative log paths live. */
  workDir: string;
  /** Log file relative to workDir, "-" for stdout, undefined for stderr. */
  logFile?: string;
  /** Log level 0..4. */
  verbosity: number;
  /** Inherited fd to write the readiness byte to, if any. */
  statusFd?: number;
  /** eventfd the main thread bumps once per SIGTERM/SIGINT. */
  controlFd: number;
  /** Where to write the JSON statistics at exit, if anywhere. */
  statsFile?: string;
  /** Paging policy. */
  pager: PagerOptions;
  /** Fetch lazy pages from this page server instead of local images. */
  pageServer?: { host: string; port: number; tls?: TlsOptions };
  /** Background bytes on the wire at once (page-server mode). */
  backgroundInflight: number;
  /**
   * Push pages nobody faulted on (default). Without it pages move only on
   * faults, and the daemon runs until every process is complete or gone.
   */
  background: boolean;
  /** Log clock origin shared with the main thread. */
  logOrigin: number;
}

/** Progress reports to the main thread. */
export type Phase = "listening" | "serving" | "finished";

/** Per-process part of the statistics. */
export interface ProcessReport {
  label: string;
  imagePid: number;
  hostPid?: number;
  end: ProcessEnd | "unfinished";
  reason?: string;
  counters: LazyProcess["counters"];
}

/** The JSON written to `--stats-file`. */
export interface Stats {
  exitCode: number;
  error?: string;
  /** Milliseconds from start to accepting restore's connection. */
  connectedMs?: number;
  /** Milliseconds from start to "restore finished". */
  restoreFinishedMs?: number;
  /** Milliseconds from start to exit. */
  totalMs: number;
  processes: ProcessReport[];
  source?: ReturnType<PageSource["stats"]>;
}

const SOCKET_NAME = "lazy-pages.socket";
const TOKEN_CONTROL = 0;
const TOKEN_RESTORE = 1;
const TOKEN_REMOTE = 2;

/** A fatal condition: the run ends, every unfinished process is stopped. */
class Fatal extends Error {}

/**
 * The page source is gone: processes that already have every page keep
 * running, the others are stopped.
 */
class SourceLost extends Fatal {}

/**
 * Runs the daemon to completion on the calling thread and returns the exit
 * code. Never throws: every failure is logged, and no restored process is
 * left running on memory it did not get.
 */
export function runDaemon(
  config: RuntimeConfig,
  report: (phase: Phase) => void,
): number {
  const rt = new Runtime(config, report);
  return rt.run();
}

class Runtime {
  readonly #cfg: RuntimeConfig;
  readonly #report: (phase: Phase) => void;
  readonly #t0 = now();
  #log!: Logger;
  #ep!: Epoll;
  #pager?: Pager;
  #source?: PageSource<Pending>;
  #remote?: RemoteSource<Pending>;
  #remoteOut = false;
  #retries: { pending: Pending; chunk: Chunk }[] = [];
  #conn = -1;
  #listen = -1;
  #peerPid = 0;
  readonly #procs: LazyProcess[] = [];
  readonly #byToken = new Map<number, { p: LazyProcess; pidfd: boolean }>();
  #nextToken = 3;
  #faults = new Map<LazyProcess, number[]>();
  readonly #unbound = new Set<LazyProcess>();
  #finished = false;
  #finishedMs?: number;
  #connectedMs?: number;
  #finishWord = new Uint8Array(4);
  #finishGot = 0;
  #signals = 0;
  #rr = 0;
  #failed = false;

  constructor(cfg: RuntimeConfig, report: (phase: Phase) => void) {
    this.#cfg = cfg;
    this.#report = report;
  }

  run(): number {
    let code = 1;
    let error: string | undefined;
    try {
      Deno.chdir(this.#cfg.workDir);
      this.#log = new Logger({
        file: this.#cfg.logFile,
        level: this.#cfg.verbosity,
        origin: this.#cfg.logOrigin,
      });
    } catch (e) {
      console.error(`lazyd: cannot set up ${this.#cfg.workDir}: ${msg(e)}`);
      return 1;
    }
    try {
      this.#ep = new Epoll();
      this.#ep.add(this.#cfg.controlFd, {
        events: EPOLLIN,
        token: TOKEN_CONTROL,
      });
      const plan = this.#prepare();
      this.#handshake(plan);
      this.#loop();
      code = this.#failed ? 1 : 0;
    } catch (e) {
      if (e instanceof SourceLost) {
        // Whoever already has every page needs nothing more from the source.
        for (const p of this.#procs) {
          if (p.active && p.drained && !this.#faults.has(p)) {
            this.#finish(p, "complete");
          }
        }
      }
      error = e instanceof Fatal || e instanceof ImageError ||
          e instanceof SourceError
        ? e.message
        : `internal error: ${e instanceof Error ? e.stack : String(e)}`;
      this.#log.error(error);
      this.#stopUnfinished("the daemon stopped before delivering its pages");
      code = 1;
    } finally {
      this.#cleanup();
    }
    this.#summary(code, error);
    return code;
  }

  // ---------------------------------------------------------------- start

  #prepare(): Plan {
    const dir = ImageDir.open(this.#cfg.imagesDir);
    const ps = this.#cfg.pageServer;
    const plan = makePlan(dir, { local: ps === undefined });
    this.#log.info(`images ${dir.path}: ${plan.pids.length} process(es)`);
    const local = new LocalSource(dir);
    this.#source = local;
    if (ps) {
      // Connect before listening: an unreachable source then fails the
      // daemon before restore starts, not after processes were created.
      this.#remote = RemoteSource.connect<Pending>({
        host: ps.host,
        port: ps.port,
        dir,
        local,
        backgroundInflight: this.#cfg.backgroundInflight,
        tls: ps.tls,
      });
      this.#source = this.#remote;
      this.#log.info(`connected to the page server ${this.#remote.peer}`);
      this.#ep.add(this.#remote.fd, {
        events: EPOLLIN | EPOLLRDHUP,
        token: TOKEN_REMOTE,
      });
    }
    this.#pager = new Pager(this.#source, this.#log, this.#cfg.pager);
    const path = `${Deno.cwd()}/${SOCKET_NAME}`;
    // Bound, restricted and listening under a private name first, then
    // renamed into place: whoever sees lazy-pages.socket can connect.
    const tmp = `.${SOCKET_NAME}.${Deno.pid}`;
    this.#listen = listenUnix(tmp, { backlog: 10, mode: 0o600 });
    Deno.renameSync(tmp, SOCKET_NAME);
    this.#log.msg(`lazyd: waiting for criu restore on ${path}`);
    this.#report("listening");
    if (this.#cfg.statusFd !== undefined) {
      try {
        writeFd(this.#cfg.statusFd, new Uint8Array(1));
        closeFd(this.#cfg.statusFd);
      } catch (e) {
        throw new Fatal(`--status-fd ${this.#cfg.statusFd}: ${msg(e)}`);
      }
    }
    return plan;
  }

  /**
   * Accepts restore's one connection and reads one record per pstree entry:
   * a 4-byte pid, then (live processes) a byte carrying the uffd. Restore
   * sends them while it builds the tree, before any process runs, so
   * blocking reads are fine here and keep the protocol simple.
   */
  #handshake(plan: Plan): void {
    const uid = getuid();
    for (;;) {
      const fd = acceptOne(this.#listen);
      const cred = peerCred(fd);
      if (cred.uid === 0 || cred.uid === uid) {
        this.#conn = fd;
        this.#peerPid = cred.pid;
        break;
      }
      this.#log.error(
        `refused a connection from pid ${cred.pid} uid ${cred.uid}: not root nor uid ${uid}`,
      );
      closeFd(fd);
    }
    closeFd(this.#listen);
    this.#listen = -1;
    // The socket file has served its purpose; left behind it breaks tools
    // that copy the directory (CRIU issue #355).
    try {
      Deno.removeSync(SOCKET_NAME);
    } catch { /* already gone */ }
    this.#connectedMs = now() - this.#t0;
    this.#log.info(`restore connected (pid ${this.#peerPid})`);

    const expected = new Set(plan.pids);
    for (let i = 0; i < plan.pids.length; i++) {
      const word = this.#recv(
        4,
        `the pid of record ${i + 1} of ${plan.pids.length}`,
      );
      const pid = new DataView(word.buffer).getInt32(0, true);
      const abs = Math.abs(pid);
      if (pid === 0 || !expected.has(abs)) {
        throw new Fatal(
          `restore sent pid ${pid} in record ${i + 1}; pstree.img has ${
            [...expected].join(", ") || "no more pids"
          }`,
        );
      }
      expected.delete(abs);
      if (pid < 0) {
        this.#log.debug(`zombie pid ${pid}`);
        continue;
      }
      let uffd: number;
      try {
        uffd = recvFd(this.#conn).fd;
      } catch (e) {
        throw new Fatal(`receiving the userfaultfd of pid ${pid}: ${msg(e)}`);
      }
      this.#addProcess(plan, pid, uffd);
    }
    setNonblocking(this.#conn, true);
    this.#ep.add(this.#conn, {
      events: EPOLLIN | EPOLLRDHUP,
      token: TOKEN_RESTORE,
    });
    // From here on signals are the loop's: it finishes the delivery.
    this.#report("serving");
  }

  #recv(n: number, what: string): Uint8Array {
    let got: Uint8Array | null;
    try {
      got = recvExact(this.#conn, n);
    } catch (e) {
      throw new Fatal(`reading ${what} from restore: ${msg(e)}`);
    }
    if (got === null) {
      throw new Fatal(
        `restore closed the connection before sending ${what} (restore failed; see its log)`,
      );
    }
    return got;
  }

  #addProcess(plan: Plan, pid: number, uffd: number): void {
    const pp = plan.processes.get(pid);
    if (!pp) {
      closeFd(uffd);
      throw new Fatal(
        `restore sent a uffd for pid ${pid}, which has no pagemap in the images`,
      );
    }
    const hostPid = findHostPid(pid, { ancestor: this.#peerPid });
    const p = new LazyProcess({
      imagePid: pid,
      uffd,
      lazy: copyRanges(pp.ranges),
      totalPages: pp.lazyPages,
      hostPid,
      label: `${pid}-${uffd}`,
    });
    p.hostPidCertain = hostPid !== undefined;
    this.#watch(p);
    this.#log.debug(
      `received pid ${pid} (host ${hostPid ?? "unknown"}) with uffd ${uffd}: ` +
        `${pp.vmas} VMAs, ${pp.lazyPages} lazy pages`,
    );
  }

  /** Puts a process's uffd (and pidfd, when its host pid is known) in the poll set. */
  #watch(p: LazyProcess): void {
    this.#procs.push(p);
    const t = this.#nextToken++;
    this.#byToken.set(t, { p, pidfd: false });
    this.#ep.add(p.uffd, { events: EPOLLIN, token: t });
    this.#watchPidfd(p);
  }

  #watchPidfd(p: LazyProcess): void {
    if (p.hostPid === undefined) return;
    try {
      p.pidfd = pidfdOpen(p.hostPid);
      const tp = this.#nextToken++;
      this.#byToken.set(tp, { p, pidfd: true });
      this.#ep.add(p.pidfd, { events: EPOLLIN, token: tp });
    } catch (e) {
      if (!(e instanceof SysError && e.errno === E.ESRCH)) throw e;
      this.#onPidfd(p);
    }
  }

  // ---------------------------------------------------------------- loop

  #loop(): void {
    while (this.#procs.some((p) => p.active) || !this.#finished) {
      const busy = this.#faults.size > 0 || this.#retries.length > 0 ||
        (this.#finished && this.#cfg.background &&
          this.#source!.canFetch(false) &&
          this.#procs.some((p) => p.active && p.lazy.length > 0));
      // While a forked child's host pid is unknown, look again every 50 ms.
      const idle = this.#unbound.size > 0 ? 50 : -1;
      for (const ev of this.#ep.wait(busy ? 0 : idle)) {
        this.#dispatch(ev.token, ev.events);
      }
      if (this.#unbound.size > 0) this.#bindChildren();
      this.#retryCompletions();
      this.#serveFaults();
      if (this.#faults.size === 0 && this.#finished && this.#cfg.background) {
        this.#backgroundStep();
      }
      this.#updateRemoteInterest();
      if (this.#finished) {
        for (const p of this.#procs) {
          if (p.active && p.drained && !this.#faults.has(p)) {
            this.#finish(p, "complete");
          }
        }
      }
    }
    this.#report("finished");
  }

  #dispatch(token: number, events: number): void {
    if (token === TOKEN_CONTROL) return this.#onSignal();
    if (token === TOKEN_RESTORE) return this.#onRestore(events);
    if (token === TOKEN_REMOTE) return this.#onRemote();
    const w = this.#byToken.get(token);
    if (!w || !w.p.active) return; // closed earlier in this batch
    if (w.pidfd) return this.#onPidfd(w.p);
    this.#drain(w.p);
  }

  /**
   * The pidfd says the process exited. For a host pid found at the
   * handshake that is the truth. A forked child's host pid is a guess
   * (see #bindChildren), and a wrong guess must never make a live process
   * lose its pages, so its uffd is asked (Pager.alive) before it counts.
   */
  #onPidfd(p: LazyProcess): void {
    this.#drain(p);
    if (!p.active) return;
    if (p.hostPidCertain || p.drained) return this.#finish(p, "exited");
    const alive = this.#pager!.alive(p);
    if (alive === false) return this.#finish(p, "exited");
    this.#log.debug(
      `${p.label}: host pid ${p.hostPid} exited, the uffd says ${
        alive ?? "nothing"
      }`,
    );
    this.#unwatchPidfd(p);
    p.hostPid = undefined;
    // Still unknown: a background chunk settles it, its copy answers
    // ESRCH if the process is gone; if not, it was delivered early.
    if (alive === undefined) this.#settle(p, this.#pager!.background(p));
  }

  #unwatchPidfd(p: LazyProcess): void {
    if (p.pidfd === undefined) return;
    for (const [t, w] of this.#byToken) {
      if (w.p === p && w.pidfd) this.#byToken.delete(t);
    }
    this.#ep.remove(p.pidfd);
    closeFd(p.pidfd);
    p.pidfd = undefined;
  }

  /**
   * Reads every pending message of one uffd. Fork, remap, remove and unmap
   * change the bookkeeping at once (the process is blocked until they are
   * read, and later messages may depend on them); faults are queued and
   * answered after all uffds are drained, against the bookkeeping as it is
   * then, which is what the faulting thread will see when it retries.
   */
  #drain(p: LazyProcess): void {
    for (;;) {
      let msgs: UffdEvent[];
      try {
        msgs = readMessages(p.uffd);
      } catch (e) {
        throw new Fatal(`${p.label}: cannot read uffd messages: ${msg(e)}`);
      }
      if (msgs.length === 0) return;
      for (const m of msgs) {
        switch (m.kind) {
          case "pagefault": {
            const q = this.#faults.get(p);
            if (q) q.push(m.address);
            else this.#faults.set(p, [m.address]);
            break;
          }
          case "fork":
            this.#onFork(p, m.ufd);
            break;
          case "remap":
            this.#pager!.remap(p, m);
            break;
          case "remove":
            if (this.#pager!.remove(p, m) === "exited") {
              this.#finish(p, "exited");
            }
            break;
          case "unmap":
            this.#pager!.unmap(p, m);
            break;
          default:
            throw new Fatal(`${p.label}: unexpected uffd event ${m.event}`);
        }
        if (!p.active) return;
      }
    }
  }

  #onFork(parent: LazyProcess, ufd: number): void {
    const child = this.#pager!.fork(parent, ufd);
    this.#watch(child);
    // The kernel reports the fork from inside fork(), before the child is
    // visible in /proc: its host pid is looked up in the next turns.
    if (child.parentHostPid !== undefined) this.#unbound.add(child);
  }

  /**
   * Binds forked children to host pids: a live child of the parent that
   * no other process claims, the oldest first (children appear in fork
   * order). A child that never appears (it exited at once) is found gone
   * by the liveness probe.
   */
  #bindChildren(): void {
    const known = new Set(this.#procs.map((x) => x.hostPid));
    for (const p of this.#unbound) {
      if (!p.active) {
        this.#unbound.delete(p);
        continue;
      }
      const fresh = childrenOf(p.parentHostPid!).filter((c) =>
        !known.has(c) && isLive(c)
      ).sort((a, b) => a - b);
      if (fresh.length > 0) {
        p.hostPid = fresh[0];
        known.add(p.hostPid);
        this.#unbound.delete(p);
        this.#watchPidfd(p);
      } else if (this.#pager!.alive(p) === false) {
        this.#finish(p, "exited");
      }
    }
  }

  #serveFaults(): void {
    if (this.#faults.size === 0) return;
    const pending = this.#faults;
    this.#faults = new Map();
    for (const [p, addrs] of pending) {
      for (let i = 0; i < addrs.length && p.active; i++) {
        const outcome = this.#pager!.fault(p, addrs[i]);
        if (outcome === "retry") {
          // An event is being delivered; the next drain reads it, then
          // these faults are answered against the updated bookkeeping.
          const rest = addrs.slice(i);
          const q = this.#faults.get(p);
          this.#faults.set(p, q ? q.concat(rest) : rest);
          break;
        }
        this.#settle(p, outcome);
      }
    }
  }

  /**
   * Background chunks for the processes in turn, so they are filled
   * interleaved rather than one after another: one chunk per loop turn
   * from local images (a synchronous copy; faults are polled in between),
   * as many as the source takes from a page server.
   */
  #backgroundStep(): void {
    const n = this.#procs.length;
    while (this.#source!.canFetch(false)) {
      let sent = false;
      for (let k = 0; k < n && !sent; k++) {
        const p = this.#procs[(this.#rr + k) % n];
        if (!p.active || p.lazy.length === 0) continue;
        this.#rr = (this.#rr + k + 1) % n;
        const outcome = this.#pager!.background(p);
        if (outcome !== "retry") this.#settle(p, outcome);
        sent = true;
      }
      if (!sent || this.#remote === undefined) return;
    }
  }

  /** Replies from the page server: copy them in. */
  #onRemote(): void {
    let done;
    try {
      done = this.#remote!.onReady();
    } catch (e) {
      throw new SourceLost((e as Error).message);
    }
    for (const c of done) this.#complete(c.tag, c.chunk);
  }

  #complete(pending: Pending, chunk: Chunk): void {
    const { p } = pending;
    const outcome = this.#pager!.complete(pending, chunk);
    // An event is being delivered: read it first (next turn), then copy
    // the same data to wherever the pages are by then.
    if (outcome === "retry") this.#retries.push({ pending, chunk });
    else this.#settle(p, outcome);
    if (p.refaults.length > 0 && p.active) {
      const q = this.#faults.get(p);
      this.#faults.set(p, q ? q.concat(p.refaults) : p.refaults);
      p.refaults = [];
    }
  }

  #retryCompletions(): void {
    if (this.#retries.length === 0) return;
    const list = this.#retries;
    this.#retries = [];
    for (const r of list) this.#complete(r.pending, r.chunk);
  }

  /** Polls for EPOLLOUT only while requests wait to be sent. */
  #updateRemoteInterest(): void {
    const r = this.#remote;
    if (!r || r.wantsWrite === this.#remoteOut) return;
    this.#remoteOut = r.wantsWrite;
    this.#ep.modify(r.fd, {
      events: EPOLLIN | EPOLLRDHUP | (this.#remoteOut ? EPOLLOUT : 0),
      token: TOKEN_REMOTE,
    });
  }

  #settle(p: LazyProcess, outcome: Outcome): void {
    if (outcome === "exited") this.#finish(p, "exited");
    else if (outcome === "failed") {
      this.#failStop(p, p.reason ?? "unknown failure");
    }
  }

  #onRestore(events: number): void {
    const scratch = new Uint8Array(4);
    for (;;) {
      // Until the word is complete, read into it; after it, anything at
      // all is a protocol error (restore only ever closes).
      const buf = this.#finished
        ? scratch
        : this.#finishWord.subarray(this.#finishGot);
      let n: number | null;
      try {
        n = readFd(this.#conn, buf);
      } catch (e) {
        throw new Fatal(`reading from restore: ${msg(e)}`);
      }
      if (n === null) break; // EAGAIN
      if (n === 0) {
        this.#ep.remove(this.#conn);
        closeFd(this.#conn);
        this.#conn = -1;
        if (!this.#finished) {
          throw new Fatal(
            "restore closed the connection before it finished (restore failed; see its log)",
          );
        }
        return;
      }
      if (this.#finished) {
        throw new Fatal("restore sent data after the restore-finished word");
      }
      this.#finishGot += n;
      if (this.#finishGot === 4) {
        const word = new DataView(this.#finishWord.buffer).getUint32(0, true);
        if (word !== RESTORE_FINISHED) {
          throw new Fatal(
            `unexpected word 0x${word.toString(16)} from restore`,
          );
        }
        this.#finished = true;
        this.#finishedMs = now() - this.#t0;
        this.#log.info("restore finished; pushing the remaining pages");
      }
    }
    if (events & EPOLLHUP && this.#conn >= 0 && !this.#finished) {
      throw new Fatal("restore hung up before it finished");
    }
  }

  #onSignal(): void {
    this.#signals += eventfdRead(this.#cfg.controlFd);
    if (this.#signals === 1) {
      this.#log.warn(
        "signal received: delivering the remaining pages, then exiting",
      );
    } else if (this.#signals >= 2) {
      throw new Fatal(
        "second signal: stopping the processes that are not complete",
      );
    }
  }

  // ---------------------------------------------------------------- ends

  #finish(p: LazyProcess, end: ProcessEnd): void {
    if (!p.active) return;
    p.end = end;
    this.#faults.delete(p);
    this.#release(p);
    const c = p.counters;
    this.#log.info(
      `${p.label}: ${end}: UFFD transferred pages: (${c.copiedPages}/${c.totalPages})`,
    );
  }

  /**
   * The one thing CRIU's daemon never does: when a process's pages cannot
   * be delivered it is killed. Closing its uffd instead would let the
   * kernel satisfy every later fault with a zero page, and the process
   * would carry on computing with wrong memory.
   */
  #failStop(p: LazyProcess, reason: string): void {
    if (!p.active) return;
    this.#failed = true;
    p.reason = reason;
    const how = this.#kill(p);
    this.#log.error(`${p.label}: ${reason}; ${how}`);
    p.end = "failed";
    this.#faults.delete(p);
    this.#release(p);
  }

  #kill(p: LazyProcess): string {
    try {
      if (p.pidfd !== undefined) pidfdSendSignal(p.pidfd, SIG.KILL);
      else if (p.hostPid !== undefined) Deno.kill(p.hostPid, "SIGKILL");
      else return "its host pid is unknown, so it could not be killed";
      return `killed it (host pid ${p.hostPid})`;
    } catch (e) {
      return `it could not be killed: ${msg(e)}`;
    }
  }

  #stopUnfinished(reason: string): void {
    for (const p of this.#procs) {
      if (p.active) this.#failStop(p, reason);
    }
  }

  #release(p: LazyProcess): void {
    for (const [t, w] of this.#byToken) if (w.p === p) this.#byToken.delete(t);
    for (const fd of [p.uffd, p.pidfd]) {
      if (fd === undefined) continue;
      try {
        this.#ep.remove(fd);
      } catch { /* never added */ }
      try {
        closeFd(fd);
      } catch { /* already closed */ }
    }
    p.pidfd = undefined;
  }

  #cleanup(): void {
    if (this.#listen >= 0) {
      closeFd(this.#listen);
      try {
        Deno.removeSync(SOCKET_NAME);
      } catch { /* gone */ }
    }
    if (this.#conn >= 0) closeFd(this.#conn);
    // After a failure the session is not closed politely: the source may
    // be what failed, and the closing exchange must not delay the exit.
    if (this.#remote && this.#failed) this.#remote.abort();
    else if (this.#remote) {
      const status = this.#remote.close();
      if (status !== 0) {
        this.#log.warn(
          `page server ${this.#remote.peer}: ${
            status === undefined
              ? "no status after PS_IOV_CLOSE"
              : `status ${status} after PS_IOV_CLOSE`
          }`,
        );
      }
    }
    this.#source?.close();
  }

  #summary(code: number, error: string | undefined): void {
    const stats: Stats = {
      exitCode: code,
      error,
      connectedMs: this.#connectedMs,
      restoreFinishedMs: this.#finishedMs,
      totalMs: now() - this.#t0,
      processes: this.#procs.map((p) => ({
        label: p.label,
        imagePid: p.imagePid,
        hostPid: p.hostPid,
        end: p.end ?? "unfinished",
        reason: p.reason,
        counters: p.counters,
      })),
      source: this.#source?.stats(),
    };
    if (this.#cfg.statsFile) {
      try {
        Deno.writeTextFileSync(
          this.#cfg.statsFile,
          JSON.stringify(stats, null, 2) + "\n",
        );
      } catch (e) {
        this.#log.error(`cannot write ${this.#cfg.statsFile}: ${msg(e)}`);
      }
    }
    const copied = this.#procs.reduce((a, p) => a + p.counters.copiedPages, 0);
    this.#log.info(
      `exit ${code}: ${this.#procs.length} process(es), ${copied} pages copied in ${
        (stats.totalMs / 1000).toFixed(3)
      } s`,
    );
  }
}

function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
