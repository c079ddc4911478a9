// Builds the bundled dataset (train.jsonl, validation.jsonl) from the hand-written pieces in
// content-*.mjs: each row pairs a scene description with one cinematic video prompt that opens
// with a camera move and describes light, atmosphere, film texture and mood. Deterministic:
// `node data/cinematic-prompts/build.mjs` rewrites the same files byte for byte.
//
// Every subject goes to one split only (one in seven to validation), so validation scenes are
// unseen in training. Each subject appears in five places; camera moves, light, atmosphere,
// texture and mood are drawn least-used-first so no phrase dominates.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLACES } from './content-places.mjs';
import { SUBJECTS } from './content-subjects.mjs';
import { ATMOSPHERE, CAMERAS, DETAIL_TAILS, LIGHTS, MOODS, STYLE_WORDS, TEXTURES } from './content-style.mjs';

const USES_PER_SUBJECT = 5;
const SEED = 20250701;
const VALIDATION_EVERY = 7;

/** mulberry32 */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const cap = (s) => s[0].toUpperCase() + s.slice(1);
const wordCount = (s) => s.split(/\s+/).filter(Boolean).length;

function placesFor(subject) {
  return PLACES.filter(
    (p) =>
      subject.kinds.includes(p.kind) &&
      (subject.times === undefined || subject.times.includes(p.time.replace(/^i/, ''))) &&
      (subject.not === undefined || !subject.not.some((n) => p.s.includes(n))) &&
      (subject.only === undefined || subject.only.some((n) => p.s.includes(n))),
  );
}

/** Sentence plans over O (opening), L (light), A (atmosphere), T (texture), M (mood). */
const PLANS = [
  (f) => `${f.O}, ${f.L}; ${f.A}. ${cap(f.T)}, ${f.M}.`,
  (f) => `${f.O} with ${f.A}. ${cap(f.L)}, ${f.T}; ${f.M}.`,
  (f) => `${f.O}. ${cap(f.L)}, ${f.A}, ${f.M}. ${cap(f.T)}.`,
  (f) => `${f.O}; ${f.L} and ${f.A}. ${cap(f.T)} and ${f.M}.`,
  (f) => `${f.O}, ${f.A}. ${cap(f.L)}; ${f.T}, ${f.M}.`,
  (f) => `${f.O} — ${f.L}, ${f.A}. ${cap(f.T)}; ${f.M}.`,
];

/** The rows of both splits, in file order. */
export function buildRows() {
  const rand = rng(SEED);
  const chance = (p) => rand() < p;

  /** Picks the least-used candidate (ties at random) and counts the use. */
  const uses = new Map();
  function pickBalanced(candidates, key = (c) => c) {
    let best = Infinity;
    let pool = [];
    for (const c of candidates) {
      const n = uses.get(key(c)) ?? 0;
      if (n < best) {
        best = n;
        pool = [c];
      } else if (n === best) pool.push(c);
    }
    const choice = pool[Math.floor(rand() * pool.length)];
    uses.set(key(choice), best + 1);
    return choice;
  }

  function makeRow(subject, place) {
    const indoor = place.time.startsWith('i');
    const camera = pickBalanced(CAMERAS.filter((c) => !(c.ext && indoor) && !(c.moving && !subject.moving)), (c) => `cam:${c.hint}`);
    const light = pickBalanced(LIGHTS[place.time].filter((l) => l.needs === undefined || place.el.includes(l.needs)), (l) => `light:${l.t}`).t;
    const atmos = place.el.flatMap((e) => ATMOSPHERE[e].map((t) => ({ e, t })));
    const first = pickBalanced(atmos, (a) => `atm:${a.t}`);
    const A1 = first.t;
    const texture = pickBalanced(TEXTURES, (t) => `tex:${t}`);
    const mood = pickBalanced(MOODS[subject.tone], (m) => `mood:${m}`);
    const S = `${subject.np} ${subject.act} ${place.pp}`;
    const usesDetail = camera.open.length > 1;
    const planIndex = Math.floor(rand() * PLANS.length);
    const plan = PLANS[planIndex];
    // Optional pieces are added until the prompt reaches a length drawn between 45 and 75 words.
    const target = 45 + Math.floor(rand() * 31);
    let O = camera.open(S, subject.det);
    let A = A1;
    let T = texture;
    const detWords = new Set(subject.det.toLowerCase().split(/\W+/));
    const tails = DETAIL_TAILS.filter((t) => !detWords.has(t.split(' ')[0]));
    const extras = [
      () => {
        if (usesDetail || planIndex === 1) return false;
        O += `, ${pickBalanced(tails, (t) => `tail:${t}`)} ${subject.det}`;
        return true;
      },
      () => {
        const more = atmos.filter((a) => a.e !== first.e);
        if (more.length === 0) return false;
        A = `${A1}, ${pickBalanced(more, (a) => `atm:${a.t}`).t}`;
        return true;
      },
      () => {
        T = `${texture} with ${pickBalanced(TEXTURES.filter((t) => t !== texture), (t) => `tex:${t}`)}`;
        return true;
      },
    ];
    let response = plan({ O, L: light, A, T, M: mood });
    for (const i of shuffle([0, 1, 2])) {
      if (wordCount(response) >= target) break;
      if (extras[i]()) response = plan({ O, L: light, A, T, M: mood });
    }
    const parts = [subject.s, place.s];
    let instruction = `${parts.join(' ')}`;
    if (chance(0.3)) instruction += `, ${camera.hint}`;
    if (chance(0.3)) instruction += `. ${STYLE_WORDS[subject.tone][Math.floor(rand() * 4)]}`;
    if (chance(0.15)) instruction = `Scene ${1 + Math.floor(rand() * 12)}: ${cap(instruction)}`;
    return { instruction, response, word_count: wordCount(response) };
  }

  /** Interleaves subjects (seeded Fisher–Yates) so files do not read as blocks of one scene. */
  function shuffle(a) {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  const rows = { train: [], validation: [] };
  SUBJECTS.forEach((subject, i) => {
    const split = i % VALIDATION_EVERY === 3 ? 'validation' : 'train';
    const places = placesFor(subject);
    if (places.length < USES_PER_SUBJECT) throw new Error(`subject "${subject.s}" fits only ${places.length} places`);
    const chosen = new Set();
    for (let k = 0; k < USES_PER_SUBJECT; k++) {
      const place = pickBalanced(places.filter((p) => !chosen.has(p)), (p) => `place:${p.s}`);
      chosen.add(place);
      rows[split].push(makeRow(subject, place));
    }
  });
  return { train: shuffle(rows.train), validation: shuffle(rows.validation) };
}

/** The text of a split's .jsonl file. */
export function jsonl(rows) {
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const here = dirname(fileURLToPath(import.meta.url));
  const rows = buildRows();
  for (const split of ['train', 'validation']) {
    writeFileSync(join(here, `${split}.jsonl`), jsonl(rows[split]));
    console.log(`${split}.jsonl: ${rows[split].length} rows`);
  }
}
