/**
 * Issue 13 in a real browser: live Spark progress under the running cell, its Cancel
 * button, and one red line for a SQL typo.
 *
 * Debian's chromium (playwright-core) against a real `jupyter lab` with this checkout's
 * built extension and the real PPML kernel on the simulated enclave (approved as the
 * user does). The notebook session is sealed (the extension seals every request; the
 * kernel is in sealed mode once it holds the dataset key), so widget traffic, and the
 * Cancel click, travel sealed. The dataset is a multi-partition encrypted CSV dataset
 * written here with ppml_kernel's own writer; a slow UDF over it makes the job last long
 * enough to watch.
 *
 *  1. the panel (class `ppml-progress`) appears under the cell, its bars grow and end
 *     full, and when the cell ends it collapses to a one-line summary;
 *  2. Cancel while the job runs stops it within seconds (the cell shows the one-line
 *     cancelled message, no traceback), and the kernel stays usable (`1 + 1` gives 2);
 *  3. a `%%ppml sql` cell with a table-name typo shows exactly one line.
 *
 * Screenshots: test-artifacts/progress/ and test-artifacts/sql-typo/.
 * Needs what lab.mjs needs, plus Java for Spark. Run: jlpm test:e2e:progress
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import { PYTHON, REPO, allowSimulated, artifactsDir, launchChromium, notebook, runCell, startLab, stopLab } from './lab.mjs';

const ARTIFACTS = artifactsDir('progress');
const SQL_ARTIFACTS = artifactsDir('sql-typo');
const MRENCLAVE = 'aa'.repeat(32);
const PARTS = 6;
const ROWS = 600; // per part

const ctx = {};

/** Six encrypted CSV files and their key file, written with ppml_kernel's writer. */
function writeDataset(dir) {
  const script = `
import io, sys
from pathlib import Path
from ppml_kernel.data import format as F
from ppml_kernel.keys.files import KeyFileProvider, write_key_file
root = Path(sys.argv[1])
kf = write_key_file(root / "progress.key", "progress-key")
enc = root / "enc"
enc.mkdir()
for p in range(${PARTS}):
    rows = "".join(f"{i},{i % 5},{i * 1.5}\\n" for i in range(p * ${ROWS}, (p + 1) * ${ROWS}))
    with open(enc / f"part-{p}.csv.ppml", "wb") as out:
        F.encrypt_stream(io.BytesIO(("id,grp,amount\\n" + rows).encode()), out,
                         KeyFileProvider(kf), "progress-key", 4096)
`;
  const proc = spawnSync(PYTHON, ['-c', script, dir], { env: { ...process.env, PYTHONPATH: REPO }, encoding: 'utf8' });
  assert.equal(proc.status, 0, proc.stderr);
  return { key: path.join(dir, 'progress.key'), enc: path.join(dir, 'enc') };
}

const CELLS = data => [
  `%ppml keys import ${data.key}`,
  `%ppml load ${data.enc} --header --as t --schema 'id long, grp int, amount double' --option splitBytes=8192`,
  "from pyspark.sql import functions as F\nimport time\nslow = F.udf(lambda x: (time.sleep(0.004), x)[1], 'double')\nslower = F.udf(lambda x: (time.sleep(0.05), x)[1], 'double')",
  "print(t.rdd.getNumPartitions())\nt.select(slow('amount').alias('a')).agg(F.sum('a')).collect()[0][0]",
  "t.select(slower('amount').alias('a')).agg(F.sum('a')).collect()  # minutes unless cancelled",
  '1 + 1',
  '%%ppml sql\nSELECT grp, count(*) FROM salse GROUP BY grp'
];

before(async () => {
  for (const dir of [ARTIFACTS, SQL_ARTIFACTS]) {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
  }
  const lab = await startLab({
    prefix: 'ppml-progress-e2e-',
    kernels: { 'ppml-demo': { display: 'PPML demo (simulated enclave)', env: { PPML_SIM_MRENCLAVE: MRENCLAVE } } },
    settings: { policy: { mrenclave: [MRENCLAVE], allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] } }
  });
  const data = writeDataset(lab.tmp);
  fs.writeFileSync(path.join(lab.work, 'progress.ipynb'), JSON.stringify(notebook('ppml-demo', CELLS(data)), null, 1));
  ctx.lab = lab;
  ctx.browser = await launchChromium();
  ctx.page = await ctx.browser.newPage({ viewport: { width: 1200, height: 900 } });
  ctx.page.on('console', m => fs.appendFileSync(path.join(ARTIFACTS, 'browser-console.log'), `${m.type()}: ${m.text()}\n`));
});

after(async () => {
  await stopLab(ctx.lab, ctx.browser);
});

function step(name, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      await ctx.page?.screenshot({ path: path.join(ARTIFACTS, `FAILED-${name}.png`) }).catch(() => undefined);
      throw e;
    }
  };
}

const cellAt = (page, i) => page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(i);

/** Wait until cell `i` has run (its prompt shows a number, not `*`). */
async function finished(page, i, timeout = 300_000) {
  await page.waitForFunction(
    index => {
      const cell = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell')[index];
      return /\[\d+\]/.test(cell?.querySelector('.jp-InputPrompt')?.textContent ?? '');
    },
    i,
    { timeout, polling: 100 }
  );
}

async function runAndWait(page, i, timeout) {
  const cell = await runCell(page, i);
  await finished(page, i, timeout);
  return cell;
}

/**
 * Record every width any progress bar of a `.ppml-progress` panel takes, as it happens
 * (a MutationObserver reads the style of the changed element itself, so a value shown
 * just before the panel is closed is seen too).
 */
async function watchBars(page) {
  await page.evaluate(() => {
    const ids = new WeakMap();
    let next = 0;
    window.__ppmlBars = [];
    const note = bar => {
      if (!bar.closest('.ppml-progress')) {
        return;
      }
      if (!ids.has(bar)) {
        ids.set(bar, next++);
      }
      window.__ppmlBars.push({ bar: ids.get(bar), width: parseFloat(bar.style.width || '0'), t: performance.now() });
    };
    window.__ppmlObserver?.disconnect();
    window.__ppmlObserver = new MutationObserver(records => {
      for (const r of records) {
        if (r.type === 'attributes' && r.target.classList?.contains('progress-bar')) {
          note(r.target);
        }
        for (const n of r.addedNodes ?? []) {
          if (n.nodeType === 1) {
            n.querySelectorAll?.('.progress-bar').forEach(note);
          }
        }
      }
    });
    window.__ppmlObserver.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['style'] });
  });
}

test('the progress panel: bars grow and finish under the cell, then one summary line', { timeout: 600_000 }, step('bars', async () => {
  const { page, lab } = ctx;
  await page.goto(lab.url('lab/tree/progress.ipynb'));
  await allowSimulated(page);
  await runAndWait(page, 0, 120_000);
  const load = await runAndWait(page, 1, 300_000);
  assert.match(await load.locator('.jp-OutputArea').innerText(), /Loaded/);
  await runAndWait(page, 2, 120_000);
  await page.waitForFunction(() => /· sealed$/.test(document.querySelector('#jp-main-statusbar .ppml-status')?.textContent ?? ''), null, { timeout: 30_000 });

  await watchBars(page);
  const cell = await runCell(page, 3);
  const panel = cell.locator('.jp-OutputArea .ppml-progress');
  await panel.waitFor({ timeout: 120_000 });
  // Part-way: a bar between empty and full, on screen.
  await page.waitForFunction(() => [...document.querySelectorAll('.ppml-progress .progress-bar')].some(b => {
    const w = parseFloat(b.style.width || '0');
    return w >= 20 && w <= 80;
  }), null, { timeout: 120_000, polling: 50 });
  await cell.screenshot({ path: path.join(ARTIFACTS, '01-bars-moving.png') });
  assert.ok(await panel.getByRole('button', { name: 'Cancel' }).isVisible());
  await finished(page, 3);

  const summary = cell.locator('.ppml-progress-summary');
  await summary.waitFor({ timeout: 30_000 });
  assert.equal(await cell.locator('.ppml-progress').count(), 0, 'the panel collapsed');
  const line = await summary.innerText();
  assert.match(line, /^Spark: \d+ jobs?, \d+ stages?, \d+ tasks? in [\d.]+ s$/);
  const text = await cell.locator('.jp-OutputArea').innerText();
  const partitions = parseInt(text.trim().split(/\s+/)[0], 10);
  assert.ok(partitions >= 4, `a multi-partition dataset: ${text}`);
  const total = ((PARTS * ROWS * (PARTS * ROWS - 1)) / 2) * 1.5;
  assert.ok(text.includes(String(total)), text);
  await cell.screenshot({ path: path.join(ARTIFACTS, '02-finished-summary.png') });

  const samples = await page.evaluate(() => window.__ppmlBars);
  const byBar = new Map();
  for (const s of samples) {
    byBar.set(s.bar, [...(byBar.get(s.bar) ?? []), s.width]);
  }
  assert.ok(byBar.size >= 1, 'bars were drawn');
  const widths = [...byBar.values()];
  assert.ok(widths.some(w => w.some(x => x > 0 && x < 100)), `a bar part-way: ${JSON.stringify(widths)}`);
  for (const w of widths) {
    assert.deepEqual(w, [...w].sort((a, b) => a - b), `a bar never moves back: ${JSON.stringify(w)}`);
    assert.equal(w[w.length - 1], 100, `every bar ends full: ${JSON.stringify(widths)}`);
  }
  fs.writeFileSync(path.join(ARTIFACTS, 'bar-widths.json'), JSON.stringify(widths));
}));

test('Cancel stops the running job in the sealed session; the kernel stays usable', { timeout: 600_000 }, step('cancel', async () => {
  const { page } = ctx;
  const cell = await runCell(page, 4);
  const panel = cell.locator('.jp-OutputArea .ppml-progress');
  await panel.waitFor({ timeout: 120_000 });
  // The job's tasks are known: it is running.
  await page.waitForFunction(
    () => [...document.querySelectorAll('.ppml-progress .widget-label')].some(l => /tasks \d+\/[1-9]\d*/.test(l.textContent ?? '')),
    null,
    { timeout: 120_000, polling: 100 }
  );
  await cell.screenshot({ path: path.join(ARTIFACTS, '03-running-before-cancel.png') });
  const clicked = Date.now();
  await panel.getByRole('button', { name: 'Cancel' }).click();
  await finished(page, 4, 60_000);
  const seconds = (Date.now() - clicked) / 1000;
  console.log(`sealed Cancel: the cell ended ${seconds.toFixed(1)} s after the click`);
  assert.ok(seconds < 20, `the job went on after Cancel (${seconds.toFixed(1)} s)`);
  const summary = cell.locator('.ppml-progress-summary');
  await summary.waitFor({ timeout: 30_000 });
  assert.match(await summary.innerText(), /\(cancelled\)/);
  const outputs = cell.locator('.jp-OutputArea-output');
  const texts = (await outputs.allInnerTexts()).map(t => t.trim()).filter(t => !t.startsWith('Spark: '));
  assert.equal(texts.length, 1, `one message besides the summary: ${JSON.stringify(texts)}`);
  assert.match(texts[0], /cancel/i);
  assert.ok(!texts[0].includes('\n'), `one line, no traceback: ${texts[0]}`);
  assert.ok(!/Traceback|Py4J|at org\.apache/.test(texts[0]), texts[0]);
  assert.ok(!/SQLSTATE/.test(texts[0]), texts[0]);
  await cell.screenshot({ path: path.join(ARTIFACTS, '04-cancelled.png') });

  const next = await runAndWait(page, 5, 60_000);
  assert.equal((await next.locator('.jp-OutputArea-output').innerText()).trim(), '2');
}));

test('a SQL typo shows one red line', { timeout: 300_000 }, step('sql-typo', async () => {
  const { page } = ctx;
  const cell = await runAndWait(page, 6, 120_000);
  const outputs = cell.locator('.jp-OutputArea-output');
  assert.equal(await outputs.count(), 1, JSON.stringify(await outputs.allInnerTexts()));
  const text = (await outputs.innerText()).trim();
  assert.ok(!text.includes('\n'), `one line: ${text}`);
  assert.match(text, /^ppml: .*TABLE_OR_VIEW_NOT_FOUND.*'salse'/);
  assert.equal(await outputs.locator('.ppml-error').count(), 1, 'shown as an error (red)');
  await cell.screenshot({ path: path.join(SQL_ARTIFACTS, 'sql-typo-one-line.png') });
}));
