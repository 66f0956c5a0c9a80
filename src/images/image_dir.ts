/**
 * An images directory (`-D`) and its chain of parent directories, read on
 * demand and cached (images.md §2, §3, §4).
 *
 * @module
 */
import { join, resolve } from "node:path";
import { MAX_PARENT_DEPTH } from "./constants.ts";
import { ImageError } from "./errors.ts";
import { readImageFile } from "./framing.ts";
import { type Inventory, parseInventory } from "./inventory.ts";
import { type Mm, parseMm } from "./mm.ts";
import { type Pagemap, parsePagemap } from "./pagemap.ts";
import { parsePstree, type PstreeEntryInfo } from "./pstree.ts";
import { describe, statFile } from "./_util.ts";

/** A `pages-<n>.img` file: raw page data, never read whole. */
export interface PagesFile {
  /** Path of the file. */
  path: string;
  /** Its size in bytes; 0 when it does not exist (CRIU's "empty image"). */
  size: number;
  /** Whether the file exists. */
  exists: boolean;
}

/** Options of {@linkcode ImageDir.open}. */
export interface ImageDirOptions {
  /** Largest protobuf image accepted (default 256 MiB). */
  maxImageBytes?: number;
}

interface DirInit {
  path: string;
  realPath: string;
  depth: number;
  child?: ImageDir;
  top?: ImageDir;
  options: ImageDirOptions;
}

function checkPid(pid: number): void {
  if (!Number.isSafeInteger(pid) || pid < 1) {
    throw new RangeError(`not a pid: ${pid}`);
  }
}

/**
 * An images directory. Every reader parses its file once and caches the
 * result; every failure is an {@linkcode ImageError}. All I/O is
 * synchronous: this is start-up work (and a few stats per process).
 *
 * A parent directory reads its images with the image-set version of the
 * directory that was opened, as CRIU does (it reads one inventory and
 * applies it everywhere), so a parent needs no inventory of its own.
 */
export class ImageDir {
  /** Absolute path of the directory (for parents: the resolved link target). */
  readonly path: string;
  /** 0 for the opened directory, 1 for its parent, and so on. */
  readonly depth: number;
  readonly #realPath: string;
  readonly #child: ImageDir | undefined;
  readonly #top: ImageDir;
  readonly #options: ImageDirOptions;
  #inventory?: Inventory;
  #pstree?: PstreeEntryInfo[];
  #parent?: ImageDir | null;
  readonly #mm = new Map<number, Mm>();
  readonly #pagemaps = new Map<number, Pagemap>();
  readonly #pages = new Map<number, PagesFile>();

  private constructor(init: DirInit) {
    this.path = init.path;
    this.depth = init.depth;
    this.#realPath = init.realPath;
    this.#child = init.child;
    this.#top = init.top ?? this;
    this.#options = init.options;
  }

  /**
   * Opens an images directory; `path` is made absolute. Nothing is read
   * yet. Throws an ImageError if it is not a directory.
   */
  static open(path: string, options: ImageDirOptions = {}): ImageDir {
    const abs = resolve(path);
    if (!statFile(abs).isDirectory) {
      throw new ImageError({ file: abs, offset: 0 }, "not a directory");
    }
    return new ImageDir({
      path: abs,
      realPath: realPath(abs),
      depth: 0,
      options,
    });
  }

  /** Path of a file in this directory. */
  file(name: string): string {
    return join(this.path, name);
  }

  /** `inventory.img` (version check). */
  inventory(): Inventory {
    const file = this.file("inventory.img");
    return this.#inventory ??= parseInventory(this.#read(file), { file });
  }

  /** `pstree.img`: every dumped process, zombies included. */
  pstree(): PstreeEntryInfo[] {
    const file = this.file("pstree.img");
    return this.#pstree ??= parsePstree(
      this.#read(file),
      this.#parseOptions(file),
    );
  }

  /** `mm-<pid>.img`: the process's VMAs. */
  mm(pid: number): Mm {
    checkPid(pid);
    return cached(this.#mm, pid, () => {
      const file = this.file(`mm-${pid}.img`);
      return parseMm(this.#read(file), this.#parseOptions(file));
    });
  }

  /** `pagemap-<pid>.img`; an ImageError when it is missing. */
  pagemap(pid: number): Pagemap {
    checkPid(pid);
    return cached(this.#pagemaps, pid, () => {
      const file = this.file(`pagemap-${pid}.img`);
      return parsePagemap(this.#read(file), this.#parseOptions(file));
    });
  }

  /** Whether `pagemap-<pid>.img` exists (in a parent: whether the chain goes on). */
  hasPagemap(pid: number): boolean {
    checkPid(pid);
    if (this.#pagemaps.has(pid)) return true;
    return statFile(this.file(`pagemap-${pid}.img`), { missingOk: true }) !==
      undefined;
  }

  /** `pages-<id>.img`: its path and size (0 if it does not exist). */
  pagesFile(id: number): PagesFile {
    return cached(this.#pages, id, () => {
      const path = this.file(`pages-${id}.img`);
      const info = statFile(path, { missingOk: true });
      if (info && !info.isFile) {
        throw new ImageError({ file: path, offset: 0 }, "not a regular file");
      }
      return { path, size: info?.size ?? 0, exists: info !== undefined };
    });
  }

  /**
   * The directory the `parent` link points to, or undefined when there is
   * none. The link is followed as the kernel does for CRIU (a relative
   * target is resolved against this directory); a dangling link means no
   * parent, as for CRIU. A target that is not a directory, a chain that
   * loops or one deeper than 64 levels is an ImageError.
   */
  parent(): ImageDir | undefined {
    if (this.#parent === undefined) this.#parent = this.#openParent() ?? null;
    return this.#parent ?? undefined;
  }

  /** This directory followed by its parent, grandparent, ... */
  chain(): ImageDir[] {
    const dirs: ImageDir[] = [this];
    for (let d = this.parent(); d; d = d.parent()) dirs.push(d);
    return dirs;
  }

  #openParent(): ImageDir | undefined {
    const link = this.file("parent");
    const target = realPath(link, { missingOk: true });
    if (target === undefined) return undefined;
    if (!statFile(target).isDirectory) {
      throw new ImageError(
        { file: link, offset: 0 },
        `${target} is not a directory`,
      );
    }
    for (const d of this.#descendants()) {
      if (d.#realPath === target) {
        throw new ImageError(
          { file: link, offset: 0 },
          `parent chain loops back to ${d.path}`,
        );
      }
    }
    if (this.depth + 1 > MAX_PARENT_DEPTH) {
      throw new ImageError(
        { file: link, offset: 0 },
        `parent chain is deeper than ${MAX_PARENT_DEPTH} levels`,
      );
    }
    return new ImageDir({
      path: target,
      realPath: target,
      depth: this.depth + 1,
      child: this,
      top: this.#top,
      options: this.#options,
    });
  }

  /** This directory and the ones whose parent chain led here. */
  *#descendants(): Generator<ImageDir> {
    yield this;
    for (let d = this.#child; d; d = d.#child) yield d;
  }

  #read(file: string): Uint8Array {
    return readImageFile(file, { maxBytes: this.#options.maxImageBytes });
  }

  #parseOptions(file: string): { file: string; imgVersion: number } {
    return { file, imgVersion: this.#top.inventory().imgVersion };
  }
}

function cached<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

/** `Deno.realPathSync`; with `missingOk`, undefined when the path (or a link target) is missing. */
function realPath(path: string, options?: { missingOk?: false }): string;
function realPath(
  path: string,
  options: { missingOk: true },
): string | undefined;
function realPath(
  path: string,
  options: { missingOk?: boolean } = {},
): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch (err) {
    if (options.missingOk && err instanceof Deno.errors.NotFound) {
      return undefined;
    }
    throw new ImageError(
      { file: path, offset: 0 },
      `cannot resolve: ${describe(err)}`,
      {
        cause: err,
      },
    );
  }
}
