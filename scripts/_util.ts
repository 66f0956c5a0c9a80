/**
 * Small helpers shared by the build, benchmark and VM scripts.
 *
 * @module
 */

/** Whether anything (file, directory, link target) exists at `path`. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
