/**
 * Runner for tests/attestation/test_dcap_differential.py: verifies every case of a JSON file with
 * the browser verifier and writes the verdicts ({status, advisory_ids} or {error}) next
 * to it, for the Python side to compare with dcap-qvl's. Does nothing without
 * PPML_DIFFERENTIAL_INPUT, so `node --test` (which loads every file here) skips it.
 */
import * as fs from 'node:fs';

import { fromHex } from '../src/dcap/bytes';
import { verifyQuote } from '../src/dcap/verify';

interface Input {
  root_der: string;
  quotes: Record<string, string>;
  cases: { id: string; quote: string; collateral: Record<string, unknown>; now: number }[];
}

async function main(inputFile: string, outputFile: string): Promise<void> {
  const input: Input = JSON.parse(fs.readFileSync(inputFile, 'utf8'));
  const root = fromHex(input.root_der);
  const quotes = new Map(Object.entries(input.quotes).map(([k, v]) => [k, fromHex(v)]));
  const out: Record<string, unknown>[] = [];
  for (const c of input.cases) {
    try {
      const r = await verifyQuote(quotes.get(c.quote)!, c.collateral, { now: c.now, rootDer: root });
      out.push({ status: r.status, advisory_ids: r.advisoryIds });
    } catch (e) {
      out.push({ error: (e as Error).message });
    }
  }
  fs.writeFileSync(outputFile, JSON.stringify(out));
}

const inputFile = process.env.PPML_DIFFERENTIAL_INPUT;
if (inputFile) {
  main(inputFile, process.env.PPML_DIFFERENTIAL_OUTPUT ?? `${inputFile}.out.json`).catch(e => {
    console.error(e);
    process.exit(1);
  });
}
