import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/** Raised when a stored secret cannot be opened (wrong or missing E2EPOOL_SECRET_KEY, tampering). */
export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * AES-256-GCM for secrets at rest (the registry's Proxmox token values). The
 * key is derived from E2EPOOL_SECRET_KEY with HKDF-SHA256, so any passphrase
 * length works and the key is only ever used for this. Ciphertexts read
 * `v1:<base64 of iv | tag | ciphertext>`; GCM's tag makes a wrong key or an
 * edited value fail instead of yielding garbage.
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(secret: string) {
    if (!secret) throw new SecretBoxError('empty secret key');
    this.key = Buffer.from(
      hkdfSync('sha256', secret, 'e2epool', 'e2epool runner registry secrets v1', 32),
    );
  }

  seal(plaintext: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${VERSION}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  open(sealed: string): string {
    const [version, data] = sealed.split(':', 2);
    if (version !== VERSION || !data) throw new SecretBoxError('not a sealed secret');
    const raw = Buffer.from(data, 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new SecretBoxError('sealed secret too short');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8');
    } catch {
      throw new SecretBoxError(
        'cannot decrypt (wrong E2EPOOL_SECRET_KEY, or the value was altered)',
      );
    }
  }
}
