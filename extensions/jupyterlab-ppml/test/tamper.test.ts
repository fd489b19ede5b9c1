/**
 * The browser verifier against dcap-qvl's verdicts on tampered and synthetic variants
 * (tests/data/tamper-vectors.json, written by tests/tools/make_tamper_vectors.py, which
 * also records what dcap-qvl 0.7.0 says about each).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import { fromHex } from '../src/dcap/bytes';
import { verifyQuote } from '../src/dcap/verify';
import { applyMutations } from './mutate';
import { dataDir, readJson, readQuote, readText } from './util';

const file = readJson('tamper-vectors.json');

function baseOf(c: any): { quote: Uint8Array; collateral: Record<string, unknown>; root?: Uint8Array } {
  if (c.base.vector) {
    return {
      quote: readQuote(c.base.vector),
      collateral: JSON.parse(readText(path.join('vectors', c.base.collateral)))
    };
  }
  const b = file.synthetic_bases[c.base.synthetic];
  return { quote: fromHex(b.quote), collateral: { ...b.collateral }, root: fromHex(b.root_der) };
}

for (const c of file.cases) {
  test(`${c.id}: dcap-qvl says ${c.expected.status ?? 'ERROR ' + c.expected.error.split('\n')[0]}`, async () => {
    const base = baseOf(c);
    const { quote, collateral, root, now } = applyMutations(base, c, file, dataDir());
    const run = verifyQuote(quote, collateral, { now, rootDer: root });
    if (c.expected.error !== undefined) {
      await assert.rejects(run, (e: Error) => {
        assert.ok(e.message.length > 0);
        return true;
      });
    } else {
      const report = await run;
      assert.equal(report.status, c.expected.status);
      assert.deepEqual(report.advisoryIds, c.expected.advisory_ids);
      assert.equal(report.intelRoot, root === undefined);
    }
  });
}
