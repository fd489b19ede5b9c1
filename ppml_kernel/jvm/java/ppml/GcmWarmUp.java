/*
 * Warms HotSpot's AES-GCM once per JVM, in a background thread, before the first
 * encrypted read needs it.
 *
 * HotSpot 17 decrypts AES-GCM at ~60 MB/s until C2 has compiled the calling code with
 * its AES/GHASH intrinsics (~5 GB/s after): about 70 calls between direct ByteBuffers,
 * but thousands of calls between byte arrays, and a compiled caller that has only seen
 * one message size deoptimises on the next size and starts counting again. Parquet's
 * reader (PME) decrypts every page, page header and column index in byte arrays, so a
 * small table's queries ran the slow path for the whole session. Measured on this
 * project's machines (docs/datasets.md): after ~6000 byte-array calls over a spread of
 * sizes, later calls of any size from any caller run at 4-6 GB/s; the warm-up costs
 * about 0.7 s of one core, once, while the user reads the session's first output.
 */
package ppml;

import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public final class GcmWarmUp {
  private static final AtomicBoolean STARTED = new AtomicBoolean();
  /** Message sizes on both sides of HotSpot's branches (7680-byte parallel path, loops). */
  private static final int[] SIZES = {37, 512, 4000, 7700, 9000, 33000, 70001};
  private static final int ARRAY_CALLS = 6000;
  private static final int DIRECT_CALLS = 100;
  private static final int DIRECT_SIZE = 1 << 20;
  private static volatile boolean done;

  private GcmWarmUp() {}

  /** Starts the warm-up thread the first time; later calls return at once. */
  public static void start() {
    if (STARTED.compareAndSet(false, true)) {
      Thread t = new Thread(GcmWarmUp::run, "ppml-gcm-warm-up");
      t.setDaemon(true);
      t.setPriority(Thread.MIN_PRIORITY);
      t.start();
    }
  }

  /** Whether the warm-up has finished (for tests and diagnostics). */
  public static boolean done() {
    return done;
  }

  private static void run() {
    try {
      byte[] throwaway = new byte[32];
      new SecureRandom().nextBytes(throwaway);  // generateSeed may block on entropy
      SecretKeySpec key = new SecretKeySpec(throwaway, "AES");
      byte[] iv = new byte[12];
      byte[] aad = new byte[21];
      Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
      byte[][] sealed = new byte[SIZES.length][];
      for (int i = 0; i < SIZES.length; i++) {
        sealed[i] = seal(key, iv, aad, new byte[SIZES[i]]);
      }
      byte[] out = new byte[DIRECT_SIZE];
      for (int i = 0; i < ARRAY_CALLS; i++) {  // as Parquet's AesGcmDecryptor calls it
        byte[] ct = sealed[i % sealed.length];
        c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(128, iv));
        c.updateAAD(aad);
        c.doFinal(ct, 0, ct.length, out, 0);
      }
      byte[] big = seal(key, iv, aad, new byte[DIRECT_SIZE]);
      ByteBuffer in = ByteBuffer.allocateDirect(big.length);
      ByteBuffer plain = ByteBuffer.allocateDirect(DIRECT_SIZE);
      for (int i = 0; i < DIRECT_CALLS; i++) {  // as AeadInputStream opens its chunks
        in.clear();
        in.put(big).flip();
        plain.clear();
        c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(128, iv));
        c.updateAAD(aad);
        c.doFinal(in, plain);
      }
    } catch (GeneralSecurityException e) {
      // only a warm-up: a JVM without AES-GCM fails on its first real read, with a message
    } finally {
      done = true;
    }
  }

  /** A fresh Cipher each time: one Cipher refuses to encrypt twice under one key and IV. */
  private static byte[] seal(SecretKeySpec key, byte[] iv, byte[] aad, byte[] plain)
      throws GeneralSecurityException {
    Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
    c.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(128, iv));
    c.updateAAD(aad);
    return c.doFinal(plain);
  }
}
