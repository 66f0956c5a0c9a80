/**
 * One restored process as the daemon sees it: its userfaultfd, the lazy
 * ranges it still needs, how to reach it if it must be stopped, and its
 * counters.
 *
 * @module
 */
import type { LazyRange } from "../lazy/mod.ts";

/** Why a process left the daemon's care. */
export type ProcessEnd =
  | "complete" // every lazy page delivered
  | "exited" // the process went away (ESRCH, pidfd, ENOMEM on unregister)
  | "failed"; // its pages could not be delivered; it was killed

/** Counters reported per process. */
export interface ProcessCounters {
  /** Lazy pages in the images for this process (CRIU's "total"). */
  totalPages: number;
  /** Pages delivered with UFFDIO_COPY. */
  copiedPages: number;
  /** Pages answered with UFFDIO_ZEROPAGE (faults outside lazy ranges). */
  zeroPages: number;
  /** Page-fault messages received. */
  faults: number;
  /** Pages found already present (EEXIST) and skipped. */
  presentPages: number;
  /** Pages dropped by UNMAP/REMOVE events before delivery. */
  droppedPages: number;
  /** Pages delivered by the background pass (subset of copiedPages). */
  backgroundPages: number;
}

/** How to create a {@linkcode LazyProcess}. */
export interface ProcessInit {
  /** Pid in the images (forked children inherit their ancestor's). */
  imagePid: number;
  /** The process's userfaultfd, owned by the daemon from now on. */
  uffd: number;
  /** Lazy ranges still to deliver. */
  lazy: LazyRange[];
  /** Lazy pages in the images (for the statistics). */
  totalPages: number;
  /** Host pid, when known (used to stop the process on failure). */
  hostPid?: number;
  /** A pidfd for the host pid: exit detection and race-free kill. */
  pidfd?: number;
  /** Name for log lines. */
  label: string;
}

/**
 * A request whose data has not been copied in yet. `pieces` are the parts
 * still to copy, at their current addresses: fork, remap, remove and unmap
 * events update them while the data is on its way, so a late reply lands
 * where the memory is now, or nowhere if it is gone.
 */
export interface InFlight {
  /** Dump-time address of the request's first byte: the chunk's offset base. */
  image: number;
  /** Bytes requested. */
  len: number;
  /** What is left to copy, sorted, disjoint from the process's lazy ranges. */
  pieces: LazyRange[];
  /** Background transfer (not a fault). */
  background: boolean;
  /** Faulting pages waiting for this request (asked again if it falls short). */
  waiters: number[];
}

/** A restored process the daemon is filling. */
export class LazyProcess {
  readonly imagePid: number;
  readonly uffd: number;
  readonly label: string;
  hostPid: number | undefined;
  /**
   * Whether `hostPid` is known for sure (found by pid namespace and
   * ancestry at the handshake) rather than guessed (a child seen at a fork
   * event).
   */
  hostPidCertain = false;
  pidfd: number | undefined;
  /** For a forked child whose host pid is not bound yet: its parent's. */
  parentHostPid: number | undefined;
  /**
   * A current address where the process certainly has a page (one the
   * daemon filled), for the liveness probe: UFFDIO_ZEROPAGE there answers
   * EEXIST while the process lives and ESRCH once it is gone.
   */
  probeAddr: number | undefined;
  /** Sorted lazy ranges still to deliver (current addresses). */
  lazy: LazyRange[];
  /** Requests on their way (asynchronous sources only stay here long). */
  inflight: InFlight[] = [];
  /** Faults to handle again: their pages came back from a short reply. */
  refaults: number[] = [];
  /** Where the background pass continues (a current address). */
  cursor = 0;
  /**
   * End of the last fault window, -1 before the first fault: tells
   * sequential faults from scattered ones.
   */
  lastFault = -1;
  /** Set once the process is finished, gone or failed. */
  end: ProcessEnd | undefined;
  /** Why it failed, for the report. */
  reason: string | undefined;
  readonly counters: ProcessCounters;

  constructor(init: ProcessInit) {
    this.imagePid = init.imagePid;
    this.uffd = init.uffd;
    this.lazy = init.lazy;
    this.hostPid = init.hostPid;
    this.pidfd = init.pidfd;
    this.label = init.label;
    this.counters = {
      totalPages: init.totalPages,
      copiedPages: 0,
      zeroPages: 0,
      faults: 0,
      presentPages: 0,
      droppedPages: 0,
      backgroundPages: 0,
    };
  }

  /** Still being served (not complete, exited or failed). */
  get active(): boolean {
    return this.end === undefined;
  }

  /** Nothing left to deliver and nothing on its way. */
  get drained(): boolean {
    return this.lazy.length === 0 && this.inflight.length === 0;
  }
}
