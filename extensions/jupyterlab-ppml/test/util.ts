import * as fs from 'node:fs';
import * as path from 'node:path';

import { fromHex } from '../src/dcap/bytes';

/** The repository's tests/data, found by walking up from the compiled test file. */
export function dataDir(): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    const candidate = path.join(dir, 'tests', 'data');
    if (fs.existsSync(path.join(candidate, 'vectors', 'MANIFEST.json'))) {
      return candidate;
    }
    dir = path.dirname(dir);
  }
  throw new Error('tests/data not found above ' + __dirname);
}

export function readJson(rel: string): any {
  return JSON.parse(fs.readFileSync(path.join(dataDir(), rel), 'utf8'));
}

/** A vector's quote: hex text for .hex/.txt files, raw bytes otherwise. */
export function readQuote(rel: string): Uint8Array {
  const file = path.join(dataDir(), 'vectors', rel);
  if (rel.endsWith('.hex') || rel.endsWith('.txt')) {
    return fromHex(fs.readFileSync(file, 'utf8').trim().replace(/^0x/, ''));
  }
  return new Uint8Array(fs.readFileSync(file));
}

export function readText(rel: string): string {
  return fs.readFileSync(path.join(dataDir(), rel), 'utf8');
}
