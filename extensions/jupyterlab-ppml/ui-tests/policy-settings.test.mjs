/**
 * Issue 11 item 1 in a real browser: an invalid policy setting refuses every enclave,
 * at start and after a change, with a red badge naming the setting and the problem;
 * it never falls back to the default policy.
 *
 * Debian's chromium (playwright-core) against a real `jupyter lab` on 127.0.0.1 with
 * this repository's built extension and the real PPML kernel on the simulated enclave
 * (whose MRENCLAVE the valid policy pins). Three cases:
 *  1. at start, a policy that breaks only our rules (a 63-digit MRENCLAVE beside a
 *     valid one): red, names `mrenclave[1]`, no approval dialog, the kernel is told;
 *  2. at start, an unknown top-level setting (which the Jupyter server, under the old
 *     strict schema, silently replaced with the defaults): red, names it;
 *  3. after a change: a verified enclave, then the setting changed (through
 *     JupyterLab's SettingRegistry, as the settings editor saves) to a `0x`-prefixed
 *     pin: red at once, names `mrenclave[0]`; changed back: verified again.
 *
 * Needs what e2e.test.mjs needs (jlpm build:prod, chromium, $PPML_PYTHON).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import { artifactsDir, badge, launchChromium, notebook, startLab, stopLab, writeJson } from './lab.mjs';

const ARTIFACTS = artifactsDir('e2e');
const MRENCLAVE = 'aa'.repeat(32);
const VALID = { mrenclave: [MRENCLAVE], allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] };

const ctx = {};

function writeSettings(content) {
  writeJson(path.join(ctx.settings, 'jupyterlab-ppml', 'plugin.jupyterlab-settings'), content);
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const lab = await startLab({
    prefix: 'ppml-policy-e2e-',
    kernels: { 'ppml-demo': { display: 'PPML demo (simulated enclave)', env: { PPML_SIM_MRENCLAVE: MRENCLAVE } } },
    notebooks: { 'demo.ipynb': notebook('ppml-demo', ['%ppml secret db_password']) },
    // window.jupyterapp, to change the setting through JupyterLab's own SettingRegistry
    extraArgs: ['--LabApp.expose_app_in_browser=True']
  });
  Object.assign(ctx, { lab, settings: lab.settings, url: lab.url('lab/tree/demo.ipynb') });
  ctx.browser = await launchChromium();
  ctx.page = await ctx.browser.newPage({ viewport: { width: 1400, height: 900 } });
});

after(async () => {
  await stopLab(ctx.lab, ctx.browser);
});

function step(name, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      await ctx.page?.screenshot({ path: path.join(ARTIFACTS, `FAILED-policy-${name}.png`) }).catch(() => undefined);
      throw e;
    }
  };
}

async function expectRefused(page, pattern) {
  await badge(page).and(page.locator('[data-ppml-phase="failed"]')).waitFor({ timeout: 120_000 });
  const text = await badge(page).innerText();
  assert.match(text, pattern);
  assert.match(await badge(page).getAttribute('title'), /every enclave is refused until the setting is fixed/);
  assert.equal(await page.getByText('Allow a SIMULATED enclave?').count(), 0, 'no approval is asked under an unusable policy');
  return text;
}

test('at start, an invalid policy setting refuses the enclave, names the setting, and the kernel is told', { timeout: 300_000 }, step('start-invalid', async () => {
  const { page } = ctx;
  writeSettings({ policy: { mrenclave: [MRENCLAVE, 'a'.repeat(63)] } });
  await page.goto(ctx.url);
  await expectRefused(page, /PPML setting 'policy' is invalid: mrenclave\[1\]: must be 64 hex digits/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'policy-01-invalid-setting-at-start.png') });
  const cell = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first();
  await cell.locator('.jp-InputArea-editor').click();
  await page.keyboard.press('Shift+Enter');
  // Sealed sessions fail closed: the cell's request never leaves the browser and says why
  // (the kernel was told by the handshake's abort).
  await cell.locator('.jp-OutputArea-output').getByText(/nothing was sent to the kernel: PPML setting 'policy' is invalid/).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.ppml-secret-dialog').count(), 0);
}));

test('at start, an unknown setting refuses the enclave too (never the default policy)', { timeout: 300_000 }, step('start-unknown-setting', async () => {
  const { page } = ctx;
  // Breaks the old schema: the server then served {} and the default policy applied.
  writeSettings({ policy: VALID, allowed_statuses: ['UpToDate'] });
  await page.goto(ctx.url);
  await expectRefused(page, /PPML settings: unknown setting 'allowed_statuses'/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'policy-02-unknown-setting.png') });
  // (A file that is not JSON5 makes the server answer 500 for every setting: JupyterLab
  // does not start at all. A settings load that fails is refused too: test/policy.test.ts.)
}));

async function setPolicy(page, policy) {
  await page.evaluate(async value => {
    const app = window.jupyterapp;
    const token = [...app.pluginRegistry._services.keys()].find(t => /:ISettingRegistry$/.test(t.name));
    const registry = await app.resolveRequiredService(token);
    await registry.set('jupyterlab-ppml:plugin', 'policy', value);
  }, policy);
}

test('after a change to an invalid policy, the verified enclave is refused at once; fixing it verifies again', { timeout: 300_000 }, step('change', async () => {
  const { page } = ctx;
  writeSettings({ policy: VALID });
  await page.goto(ctx.url);
  await page.getByText('Allow a SIMULATED enclave?').waitFor({ timeout: 120_000 });
  await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).click();
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 60_000 });

  await setPolicy(page, { mrenclave: ['0x' + MRENCLAVE] });
  await expectRefused(page, /PPML setting 'policy' is invalid: mrenclave\[0\]: must be 64 hex digits, got "0xaa/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'policy-03-invalid-after-change.png') });
  const saved = fs.readFileSync(path.join(ctx.settings, 'jupyterlab-ppml', 'plugin.jupyterlab-settings'), 'utf8');
  assert.ok(saved.includes('0x' + MRENCLAVE), 'the invalid value is what is saved and in force');

  await setPolicy(page, { allowed_statuses: ['UpToDate'] });
  await expectRefused(page, /PPML setting 'policy' is invalid: allowed_statuses: unknown key/);

  await setPolicy(page, VALID);
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'policy-04-fixed-verified-again.png') });
}));
