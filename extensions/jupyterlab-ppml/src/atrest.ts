/**
 * Notebooks at rest (docs/protocol.md section 7): the outputs of a sealed notebook are
 * stored on the (untrusted) server encrypted under this browser's notebook key; the same
 * browser restores them when it opens the file, any other place shows a placeholder.
 * With `sealCellSources` the cell sources are sealed the same way.
 *
 * Pure functions over nbformat JSON (no JupyterLab imports), so Node tests run them.
 */

import { b64decode, b64encode, buf, concat, lp, utf8 } from './dcap/bytes';

export const SEALED_MIME = 'application/vnd.ppml.sealed-output+json';
export const SOURCE_KEY = 'ppml_sealed_source';
const OUTPUTS_LABEL = utf8('ppml-notebook/1 outputs');
const SOURCE_LABEL = utf8('ppml-notebook/1 source');

export interface AtRestKey {
  key: CryptoKey;
  keyId: string;
}

interface Sealed {
  v: number;
  key_id: string;
  iv: string;
  ct: string;
}

type Cell = { cell_type: string; id?: string; source: string | string[]; outputs?: any[]; metadata?: Record<string, any>; [k: string]: unknown };
type Notebook = { cells: Cell[]; [k: string]: unknown };

function aad(label: Uint8Array, cellId: string): Uint8Array {
  return concat(lp(label), lp(utf8(cellId)));
}

async function encrypt(key: AtRestKey, label: Uint8Array, cellId: string, value: unknown): Promise<Sealed> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv: buf(iv), additionalData: buf(aad(label, cellId)) },
    key.key,
    buf(utf8(JSON.stringify(value)))
  );
  return { v: 1, key_id: key.keyId, iv: b64encode(iv), ct: b64encode(new Uint8Array(ct)) };
}

async function decrypt(key: AtRestKey, label: Uint8Array, cellId: string, sealed: Sealed): Promise<unknown> {
  const pt = await crypto.subtle.decrypt(
    { name: 'AES-GCM', iv: buf(b64decode(sealed.iv, 'iv')), additionalData: buf(aad(label, cellId)) },
    key.key,
    buf(b64decode(sealed.ct, 'ct'))
  );
  return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt));
}

function isSealed(v: unknown): v is Sealed {
  const s = v as Sealed;
  return typeof s === 'object' && s !== null && s.v === 1 && typeof s.key_id === 'string' && typeof s.iv === 'string' && typeof s.ct === 'string';
}

/** The placeholder output of a sealed cell, or undefined. */
export function sealedOutput(outputs: unknown): Sealed | undefined {
  if (!Array.isArray(outputs) || outputs.length !== 1) {
    return undefined;
  }
  const data = outputs[0]?.data;
  const sealed = data?.[SEALED_MIME];
  return isSealed(sealed) ? sealed : undefined;
}

function cellId(cell: Cell, index: number): string {
  return typeof cell.id === 'string' && cell.id ? cell.id : `index-${index}`;
}

const sourceText = (s: string | string[]): string => (Array.isArray(s) ? s.join('') : String(s ?? ''));

/** A copy of `nb` with outputs (and, if asked, sources) sealed under `key`. */
export async function sealNotebook(nb: Notebook, key: AtRestKey, sealSources: boolean): Promise<Notebook> {
  const out: Notebook = JSON.parse(JSON.stringify(nb));
  for (let i = 0; i < out.cells.length; i++) {
    const cell = out.cells[i];
    const id = cellId(cell, i);
    if (cell.cell_type === 'code' && Array.isArray(cell.outputs) && cell.outputs.length > 0 && !sealedOutput(cell.outputs)) {
      const sealed = await encrypt(key, OUTPUTS_LABEL, id, cell.outputs);
      cell.outputs = [
        {
          output_type: 'display_data',
          metadata: {},
          data: {
            'text/plain': `[sealed output: encrypted in the browser that ran this notebook (PPML notebook key ${key.keyId}); open the notebook there to see it]`,
            [SEALED_MIME]: sealed
          }
        }
      ];
    }
    if (sealSources && cell.cell_type === 'code' && !(cell.metadata && SOURCE_KEY in cell.metadata)) {
      const text = sourceText(cell.source);
      if (text) {
        cell.metadata = { ...(cell.metadata ?? {}), [SOURCE_KEY]: await encrypt(key, SOURCE_LABEL, id, text) };
        cell.source = `# [sealed source: encrypted in the browser that wrote it (PPML notebook key ${key.keyId})]`;
      }
    }
  }
  return out;
}

/**
 * A copy of `nb` with what `key` sealed restored. Cells sealed by another key, or that
 * fail to decrypt (tampered, moved to another cell), keep their placeholder.
 */
export async function openNotebook(nb: Notebook, key: AtRestKey | null, problems: string[] = []): Promise<Notebook> {
  const out: Notebook = JSON.parse(JSON.stringify(nb));
  if (!Array.isArray(out.cells)) {
    return out;
  }
  for (let i = 0; i < out.cells.length; i++) {
    const cell = out.cells[i];
    const id = cellId(cell, i);
    const sealed = sealedOutput(cell.outputs);
    if (sealed && key && sealed.key_id === key.keyId) {
      try {
        const outputs = await decrypt(key, OUTPUTS_LABEL, id, sealed);
        if (!Array.isArray(outputs)) {
          throw new Error('not an output list');
        }
        cell.outputs = outputs;
      } catch (e) {
        problems.push(`cell ${id}: sealed outputs do not decrypt (changed, or moved from another cell)`);
      }
    }
    const src = cell.metadata?.[SOURCE_KEY];
    if (isSealed(src) && key && src.key_id === key.keyId) {
      try {
        const text = await decrypt(key, SOURCE_LABEL, id, src);
        if (typeof text !== 'string') {
          throw new Error('not a string');
        }
        cell.source = text;
        delete cell.metadata![SOURCE_KEY];
      } catch (e) {
        problems.push(`cell ${id}: sealed source does not decrypt (changed, or moved from another cell)`);
      }
    }
  }
  return out;
}
