// The device key of `auth.device` (PROTOCOL.md §13.15), shipped inside the npm package as a
// wasm-bindgen snippet: an ECDSA P-256 key pair made once per browser profile and origin by
// WebCrypto with a NON-extractable private key, kept in IndexedDB (a CryptoKeyPair is
// structured-cloneable: the browser stores the key, script never sees its bytes), and a
// signature over a fresh server nonce proving it.

const DB_NAME = 'p3-lanes-device-key';
const STORE = 'keys';
const KEY_ID = 'default';

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function openDb() {
  const r = indexedDB.open(DB_NAME, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(STORE);
  return request(r);
}

function b64url(buf) {
  let s = '';
  for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** This profile's key pair, made on first use. Two tabs racing keep the first one stored. */
async function keyPair(subtle) {
  const db = await openDb();
  try {
    const get = () => request(db.transaction(STORE).objectStore(STORE).get(KEY_ID));
    const have = await get();
    if (have) return have;
    const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const tx = db.transaction(STORE, 'readwrite');
    tx.objectStore(STORE).add(pair, KEY_ID);
    await done(tx).catch(() => {}); // ConstraintError: another tab stored one first
    return (await get()) ?? pair;
  } finally {
    db.close();
  }
}

/**
 * `{publicKey, nonce, signature}` for the handshake: fetches a nonce from `nonceUrl` and signs
 * `prefix + nonce` (ECDSA P-256, SHA-256; `r ‖ s`). Rejects where there is no WebCrypto
 * (`crypto.subtle`, secure contexts only) or no IndexedDB, or the nonce request fails.
 */
export async function deviceKeyAuth(nonceUrl, prefix) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle || !globalThis.indexedDB) {
    throw new Error('device key needs crypto.subtle (a secure context) and IndexedDB');
  }
  const pair = await keyPair(subtle);
  const resp = await fetch(nonceUrl, { cache: 'no-store' });
  if (!resp.ok) throw new Error(`nonce request: HTTP ${resp.status}`);
  const { nonce } = await resp.json();
  const signature = await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, pair.privateKey, new TextEncoder().encode(prefix + nonce));
  const publicKey = await subtle.exportKey('raw', pair.publicKey);
  return { publicKey: b64url(publicKey), nonce, signature: b64url(signature) };
}
