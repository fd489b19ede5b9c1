/**
 * This browser's long-term keys, created on first use and kept in IndexedDB as
 * non-extractable WebCrypto keys (IndexedDB stores CryptoKey objects by structured clone;
 * the page can use them but never read their bytes):
 *
 *  - the owner key (ECDSA P-256) that proves to an enclave that this browser owns it
 *    (docs/protocol.md 4.4, 5.1);
 *  - the notebook key (AES-256-GCM) that seals notebook outputs at rest (section 7).
 *
 * Two tabs creating a key at the same moment agree on one: the first `add` wins and the
 * loser reads the winner's key back.
 */

import { hex } from './dcap/bytes';
import { exportPublic, fingerprint, generateOwnerKey } from './channel/crypto';
import { OwnerKey } from './channel/session';

const DB_NAME = 'jupyterlab-ppml';
const STORE = 'keys';

export interface NotebookKey {
  key: CryptoKey;
  /** 16 hex digits naming the key in sealed outputs (random, not derived from the key). */
  keyId: string;
}

export interface StoredOwnerKey extends OwnerKey {
  fingerprint: string;
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error('IndexedDB request failed'));
  });
}

function openDb(): Promise<IDBDatabase> {
  if (typeof indexedDB === 'undefined') {
    return Promise.reject(new Error('IndexedDB is not available in this browser (private mode?)'));
  }
  const r = indexedDB.open(DB_NAME, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(STORE);
  return req(r as IDBRequest<IDBDatabase>);
}

async function getOrCreate<T>(name: string, create: () => Promise<T>): Promise<T> {
  const db = await openDb();
  try {
    const existing = await req(db.transaction(STORE, 'readonly').objectStore(STORE).get(name));
    if (existing) {
      return existing as T;
    }
    const fresh = await create();
    try {
      await req(db.transaction(STORE, 'readwrite').objectStore(STORE).add(fresh, name));
      return fresh;
    } catch (e) {
      // Another tab added one first (ConstraintError): use that one.
      const winner = await req(db.transaction(STORE, 'readonly').objectStore(STORE).get(name));
      if (winner) {
        return winner as T;
      }
      throw e;
    }
  } finally {
    db.close();
  }
}

let ownerPromise: Promise<StoredOwnerKey> | null = null;
let notebookPromise: Promise<NotebookKey> | null = null;

/** This browser's owner key (created on first use). */
export function ownerKey(): Promise<StoredOwnerKey> {
  if (!ownerPromise) {
    ownerPromise = (async () => {
      const stored = await getOrCreate<{ privateKey: CryptoKey; publicKey: CryptoKey }>('owner', async () => {
        const kp = await generateOwnerKey();
        return { privateKey: kp.privateKey, publicKey: kp.publicKey };
      });
      if (stored.privateKey.extractable) {
        throw new Error('the stored owner key is extractable: refusing to use it');
      }
      const pub = await exportPublic(stored.publicKey);
      return { privateKey: stored.privateKey, pub, fingerprint: await fingerprint(pub) };
    })();
    ownerPromise.catch(() => {
      ownerPromise = null; // try again next time
    });
  }
  return ownerPromise;
}

/** This browser's notebook key (created on first use). */
export function notebookKey(): Promise<NotebookKey> {
  if (!notebookPromise) {
    notebookPromise = (async () => {
      const stored = await getOrCreate<NotebookKey>('notebook', async () => ({
        key: await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']),
        keyId: hex(crypto.getRandomValues(new Uint8Array(8)))
      }));
      if (stored.key.extractable || !/^[0-9a-f]{16}$/.test(stored.keyId)) {
        throw new Error('the stored notebook key is not usable');
      }
      return stored;
    })();
    notebookPromise.catch(() => {
      notebookPromise = null;
    });
  }
  return notebookPromise;
}
