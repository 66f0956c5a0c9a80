import assert from "node:assert/strict";
import {
  canBeLazy,
  encodeImage,
  MAP_ANONYMOUS,
  MAP_GROWSDOWN,
  MAP_HUGETLB,
  MAP_LOCKED,
  MAP_PRIVATE,
  MAP_SHARED,
  mmRecord,
  parseMm,
  type SyntheticVma,
  VMA_ANON_PRIVATE,
  VMA_AREA_HEAP,
  VMA_AREA_REGULAR,
  VMA_AREA_VDSO,
  VMA_AREA_VSYSCALL,
  VMA_AREA_VVAR,
  VMA_FILE_PRIVATE,
} from "../../src/images/mod.ts";
import { assertImageError } from "./_helpers.ts";

const file = "/x/mm-1.img";
const parse = (vmas: SyntheticVma[], imgVersion = 2) =>
  parseMm(
    encodeImage("mm", [mmRecord(vmas)], { imgVersion: imgVersion as 1 | 2 }),
    {
      file,
      imgVersion,
    },
  );

const VSYSCALL = {
  start: 0xffffffffff600000,
  end: 0xffffffffff601000,
  prot: 4,
  status: VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE,
};

Deno.test("mm: VMAs come out as numbers, in order", () => {
  for (const v of [1, 2]) {
    const mm = parse([
      {
        start: 0x400000,
        end: 0x401000,
        flags: MAP_PRIVATE,
        status: 0x41,
        pgoff: 4096,
        shmid: 7,
      },
      { start: 0x7f0000000000, end: 0x7f0000800000 },
      // above 4 GiB and longer than 4 GiB
      { start: 0x7ffe00000000, end: 0x7fff00001000 },
    ], v);
    assert.equal(mm.file, file);
    assert.deepEqual(mm.vmas, [
      {
        start: 0x400000,
        end: 0x401000,
        prot: 3,
        flags: MAP_PRIVATE,
        status: 0x41,
        pgoff: 4096,
        shmid: 7,
      },
      {
        start: 0x7f0000000000,
        end: 0x7f0000800000,
        prot: 3,
        flags: 0x22,
        status: 0x201,
        pgoff: 0,
        shmid: 0,
      },
      {
        start: 0x7ffe00000000,
        end: 0x7fff00001000,
        prot: 3,
        flags: 0x22,
        status: 0x201,
        pgoff: 0,
        shmid: 0,
      },
    ]);
  }
});

Deno.test("mm: the vsyscall page above 2^53 is left out", () => {
  const mm = parse([{ start: 0x1000, end: 0x2000 }, VSYSCALL]);
  assert.deepEqual(mm.vmas.map((v) => v.start), [0x1000]);
});

Deno.test("mm: any other value from 2^53 on is an error", () => {
  const err = assertImageError(
    () =>
      parse([{ start: 0x1000, end: 0x2000 }, {
        ...VSYSCALL,
        status: VMA_AREA_REGULAR | VMA_ANON_PRIVATE,
      }]),
    {
      file,
      offset: 8,
      reason: /vma #1 start 0xffffffffff600000 is not below 2\^53/,
    },
  );
  assert.match(err.message, /^\/x\/mm-1.img: byte 8: /);
  assertImageError(() => parse([{ start: 0x1000, end: 2 ** 53 }]), {
    reason: /vma #0 end 0x20000000000000 is not below 2\^53/,
  });
  assertImageError(
    () => parse([{ start: 0x1000, end: 0x2000, pgoff: 2 ** 60 }]),
    {
      reason: /vma #0 pgoff/,
    },
  );
});

Deno.test("mm: VMAs must be aligned, non-empty, sorted, non-overlapping", () => {
  const cases: [SyntheticVma[], RegExp][] = [
    [
      [{ start: 0x1001, end: 0x2000 }],
      /vma #0 \[0x1001, 0x2000\) is not page aligned/,
    ],
    [[{ start: 0x1000, end: 0x2800 }], /not page aligned/],
    [[{ start: 0x2000, end: 0x2000 }], /vma #0 .* is empty or inverted/],
    [[{ start: 0x3000, end: 0x2000 }], /empty or inverted/],
    [
      [{ start: 0x1000, end: 0x3000 }, { start: 0x2000, end: 0x4000 }],
      /vma #1 .* overlaps or precedes .* 0x3000/,
    ],
    [
      [{ start: 0x5000, end: 0x6000 }, { start: 0x1000, end: 0x2000 }],
      /vma #1 .* overlaps or precedes/,
    ],
  ];
  for (const [vmas, reason] of cases) {
    assertImageError(() => parse(vmas), { file, offset: 8, reason });
  }
  // Adjacent VMAs are fine.
  assert.equal(
    parse([{ start: 0x1000, end: 0x2000 }, { start: 0x2000, end: 0x3000 }]).vmas
      .length,
    2,
  );
});

Deno.test("mm: exactly one record", () => {
  const img = encodeImage("mm", [mmRecord([]), mmRecord([])]);
  assertImageError(() => parseMm(img, { file, imgVersion: 2 }), {
    reason: /found 2/,
  });
});

Deno.test("canBeLazy: the §7.4 rule", () => {
  const anon = MAP_PRIVATE | MAP_ANONYMOUS;
  const regular = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
  const cases: [number, number, boolean][] = [
    [anon, regular, true],
    [anon | MAP_GROWSDOWN, regular, true],
    [anon, regular | VMA_AREA_HEAP, true],
    [MAP_PRIVATE, VMA_AREA_REGULAR | VMA_FILE_PRIVATE, false],
    [MAP_SHARED | MAP_ANONYMOUS, VMA_AREA_REGULAR, false],
    [anon | MAP_LOCKED, regular, false],
    [anon | MAP_HUGETLB, regular, false],
    [anon, regular | VMA_AREA_VDSO, false],
    [anon, regular | VMA_AREA_VVAR, false],
    [anon, VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE, false],
  ];
  for (const [flags, status, want] of cases) {
    assert.equal(
      canBeLazy({ flags, status }),
      want,
      `flags ${flags} status ${status}`,
    );
  }
});
