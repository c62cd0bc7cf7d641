//! `crypto_job` (`libcrypto_job.so`): the work a token server offloads.
//!
//! The `op` header picks the operation:
//! - `sign` (default): Ed25519 signature (64 bytes) of the data;
//! - `verify`: data is `signature (64 bytes) ++ message`; answers `valid` or an error;
//! - `hmac`: HMAC-SHA256 (32 bytes) of the data;
//! - `pubkey`: the Ed25519 public key (32 bytes).
//!
//! `rounds: N` repeats the operation N times (the last result is returned), to
//! size a job's CPU cost in benchmarks.
//!
//! Params (JSON): `ed25519_seed` (64 hex digits) and `hmac_key` (a string); each
//! key is generated from the OS RNG at init when not given.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use hmac::{Hmac, Mac};
use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};
use sha2::Sha256;

pub struct CryptoJob {
    signing: SigningKey,
    hmac_key: Vec<u8>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(buf)
}

impl Plugin for CryptoJob {
    fn init(params: &Params) -> Result<Self, String> {
        let seed: [u8; 32] = match params.get("ed25519_seed") {
            None => random_bytes()?,
            Some(v) => {
                let text = v.as_str().ok_or("ed25519_seed must be a string of 64 hex digits")?;
                let bytes = hex::decode(text).map_err(|e| format!("ed25519_seed: {e}"))?;
                bytes.try_into().map_err(|_| "ed25519_seed must be 32 bytes (64 hex digits)".to_string())?
            }
        };
        let hmac_key = match params.get("hmac_key") {
            None => random_bytes::<32>()?.to_vec(),
            Some(v) => v.as_str().ok_or("hmac_key must be a string")?.as_bytes().to_vec(),
        };
        Ok(CryptoJob { signing: SigningKey::from_bytes(&seed), hmac_key })
    }

    fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> {
        let rounds: u32 = match job.header("rounds") {
            None => 1,
            Some(r) => r.parse().map_err(|e| format!("rounds: {e}"))?,
        };
        let data = job.data();
        let op = job.header("op").unwrap_or("sign");
        let mut out = Vec::new();
        for _ in 0..rounds.max(1) {
            out = match op {
                "sign" => self.signing.sign(data).to_bytes().to_vec(),
                "verify" => {
                    if data.len() < 64 {
                        return Err("verify: data must be a 64-byte signature followed by the message".into());
                    }
                    let (sig, msg) = data.split_at(64);
                    let sig = Signature::from_slice(sig).map_err(|e| format!("verify: {e}"))?;
                    self.signing.verifying_key().verify(msg, &sig).map_err(|_| "verify: signature does not match")?;
                    b"valid".to_vec()
                }
                "hmac" => {
                    let mut mac = Hmac::<Sha256>::new_from_slice(&self.hmac_key).map_err(|e| e.to_string())?;
                    mac.update(data);
                    mac.finalize().into_bytes().to_vec()
                }
                "pubkey" => self.signing.verifying_key().to_bytes().to_vec(),
                other => return Err(format!("unknown op {other:?} (expected sign, verify, hmac or pubkey)")),
            };
        }
        Ok(out)
    }
}

export_plugin!(CryptoJob);
