//! The JWS compact codec for the orchestrator's own access tokens: ES256, EdDSA (Ed25519),
//! RS256 and PS256, on aws-lc-rs. Signing key pairs are parsed once and kept (a token costs one
//! signature, not a PKCS#8 parse as well); public keys are checked once at load.
//!
//! Verification is pinned: the key decides the algorithm, and a header naming any other one
//! (`none`, `HS256`, another family) is refused before the signature is looked at.

use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A signing algorithm for access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    ES256,
    EdDSA,
    RS256,
    PS256,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::ES256, Alg::EdDSA, Alg::RS256, Alg::PS256];
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
        }
    }
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A private key that signs tokens, with its `kid` and precomputed header.
pub struct SigningKey {
    pub alg: Alg,
    pub kid: String,
    header_b64: String,
    pair: Pair,
    rng: aws_lc_rs::rand::SystemRandom,
}

/// A new private key for `alg`, as PKCS#8 DER.
pub fn generate(alg: Alg) -> Result<Vec<u8>, String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    match alg {
        Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "generating a P-256 key failed".into()),
        Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "generating an Ed25519 key failed".into()),
        Alg::RS256 | Alg::PS256 => {
            use aws_lc_rs::encoding::AsDer;
            let k = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| "generating an RSA key failed")?;
            k.as_der().map(|d| d.as_ref().to_vec()).map_err(|_| "encoding an RSA key failed".into())
        }
    }
}

fn kid_of(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

impl SigningKey {
    /// Loads a PKCS#8 private key. The key type decides the family; `alg` picks within it (RSA:
    /// RS256 by default, or PS256) and must fit the key.
    pub fn from_pkcs8(pkcs8: &[u8], alg: Option<Alg>) -> Result<SigningKey, String> {
        let asked = alg;
        let (alg, pair) = if let Ok(p) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8) {
            (Alg::ES256, Pair::Ec(p))
        } else if let Ok(p) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
            (Alg::EdDSA, Pair::Ed(p))
        } else if let Ok(p) = RsaKeyPair::from_pkcs8(pkcs8) {
            if p.public_modulus_len() < 256 {
                return Err("RSA keys need at least 2048 bits".into());
            }
            (if alg == Some(Alg::PS256) { Alg::PS256 } else { Alg::RS256 }, Pair::Rsa(p))
        } else {
            return Err(
                "unsupported private key: use P-256 (ES256), Ed25519 (EdDSA) or RSA ≥ 2048 bits (RS256/PS256)".into()
            );
        };
        if let Some(asked) = asked
            && asked != alg
        {
            return Err(format!("a {} key cannot sign {asked}", family(alg)));
        }
        let kid = kid_of(public_bytes(&pair));
        let header = serde_json::json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": kid});
        Ok(SigningKey {
            alg,
            header_b64: B64.encode(header.to_string()),
            kid,
            pair,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        })
    }

    /// The public key as a JWK (RFC 7517/7518/8037) with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.pair, self.alg, &self.kid)
    }

    /// The public key: an uncompressed EC point, an Ed25519 key or a DER RSAPublicKey — what a
    /// certificate for this key holds as its subject public key.
    pub fn public_key_bytes(&self) -> &[u8] {
        public_bytes(&self.pair)
    }

    pub fn verifier(&self) -> Result<VerifyKey, String> {
        VerifyKey::new(self.alg, public_bytes(&self.pair))
    }

    /// Signs the claims: `header.payload.signature`.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, String> {
        let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 400);
        out.push_str(&self.header_b64);
        out.push('.');
        B64.encode_string(&payload, &mut out);
        let sig = match &self.pair {
            Pair::Ec(p) => p.sign(&self.rng, out.as_bytes()).map(|s| s.as_ref().to_vec()),
            Pair::Ed(p) => Ok(p.sign(out.as_bytes()).as_ref().to_vec()),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                let enc: &'static dyn signature::RsaEncoding =
                    if self.alg == Alg::PS256 { &RSA_PSS_SHA256 } else { &RSA_PKCS1_SHA256 };
                p.sign(enc, &self.rng, out.as_bytes(), &mut sig).map(|_| sig)
            }
        }
        .map_err(|_| "signing failed".to_string())?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Ok(out)
    }
}

fn family(alg: Alg) -> &'static str {
    match alg {
        Alg::ES256 => "P-256",
        Alg::EdDSA => "Ed25519",
        Alg::RS256 | Alg::PS256 => "RSA",
    }
}

fn public_bytes(pair: &Pair) -> &[u8] {
    match pair {
        Pair::Ec(p) => p.public_key().as_ref(),
        Pair::Ed(p) => p.public_key().as_ref(),
        Pair::Rsa(p) => p.public_key().as_ref(),
    }
}

fn public_jwk(pair: &Pair, alg: Alg, kid: &str) -> serde_json::Value {
    match pair {
        Pair::Ec(p) => {
            let pk = p.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": alg.as_str(), "kid": kid,
                "x": B64.encode(&pk[1..33]), "y": B64.encode(&pk[33..65])})
        }
        Pair::Ed(p) => {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": alg.as_str(), "kid": kid,
            "x": B64.encode(p.public_key().as_ref())})
        }
        Pair::Rsa(p) => {
            let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(p.public_key());
            serde_json::json!({"kty": "RSA", "use": "sig", "alg": alg.as_str(), "kid": kid,
                "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
        }
    }
}

/// A public key that verifies tokens of exactly one algorithm.
pub struct VerifyKey {
    pub alg: Alg,
    key: UnparsedPublicKey<Vec<u8>>,
}

impl VerifyKey {
    /// `public`: the uncompressed P-256 point, the 32 Ed25519 bytes, or the RSA public key
    /// (PKCS#1 DER), as aws-lc-rs gives them.
    pub fn new(alg: Alg, public: &[u8]) -> Result<VerifyKey, String> {
        let v: &'static dyn signature::VerificationAlgorithm = match alg {
            Alg::ES256 => &ECDSA_P256_SHA256_FIXED,
            Alg::EdDSA => &ED25519,
            Alg::RS256 => &RSA_PKCS1_2048_8192_SHA256,
            Alg::PS256 => &RSA_PSS_2048_8192_SHA256,
        };
        // Checked once here; verification then uses the bytes (measured faster than aws-lc's
        // pre-parsed key for ES256 and EdDSA on this machine: bench/token-verify).
        ParsedPublicKey::new(v, public).map_err(|_| format!("unusable {alg} public key"))?;
        Ok(VerifyKey { alg, key: UnparsedPublicKey::new(v, public.to_vec()) })
    }

    /// Checks the header's algorithm and the signature, then parses the claims (their JSON
    /// types are the caller's `T`). Claim values are the caller's to check.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, &'static str> {
        let (signed, sig) = token.rsplit_once('.').ok_or("malformed token")?;
        let (h, p) = signed.split_once('.').ok_or("malformed token")?;
        let header = parse_header(h)?;
        if header.alg != self.alg.as_str() {
            return Err("algorithm does not match the key");
        }
        let sig = B64.decode(sig).map_err(|_| "malformed signature")?;
        self.key.verify(signed.as_bytes(), &sig).map_err(|_| "bad signature")?;
        let payload = B64.decode(p).map_err(|_| "malformed payload")?;
        serde_json::from_slice(&payload).map_err(|_| "claims of the wrong shape or type")
    }
}

#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
}

fn parse_header(h: &str) -> Result<Header, &'static str> {
    let raw = B64.decode(h).map_err(|_| "malformed header")?;
    serde_json::from_slice(&raw).map_err(|_| "malformed header")
}

/// The header of a compact JWS (unverified).
pub fn header(token: &str) -> Result<Header, &'static str> {
    let h = token.split('.').next().ok_or("malformed token")?;
    if token.split('.').count() != 3 {
        return Err("malformed token");
    }
    parse_header(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_and_refuses_the_others() {
        let claims = serde_json::json!({"sub": "x", "exp": 1});
        let keys: Vec<SigningKey> =
            Alg::ALL.iter().map(|a| SigningKey::from_pkcs8(&generate(*a).unwrap(), Some(*a)).unwrap()).collect();
        for k in &keys {
            let t = k.sign(&claims).unwrap();
            let back: serde_json::Value = k.verifier().unwrap().verify(&t).unwrap();
            assert_eq!(back, claims, "{}", k.alg);
            assert_eq!(header(&t).unwrap().kid.as_deref(), Some(k.kid.as_str()));
            assert_eq!(k.public_jwk()["alg"], k.alg.as_str());
            for other in &keys {
                if other.kid != k.kid {
                    assert!(
                        other.verifier().unwrap().verify::<serde_json::Value>(&t).is_err(),
                        "{} by {}",
                        k.alg,
                        other.alg
                    );
                }
            }
            // Tampered payload.
            let mut parts: Vec<String> = t.split('.').map(String::from).collect();
            parts[1] = B64.encode(br#"{"sub":"y","exp":1}"#);
            assert!(k.verifier().unwrap().verify::<serde_json::Value>(&parts.join(".")).is_err());
        }
        // The same RSA key as PS256: the header names PS256 and an RS256 verifier refuses it.
        let der = generate(Alg::RS256).unwrap();
        let ps = SigningKey::from_pkcs8(&der, Some(Alg::PS256)).unwrap();
        let rs = SigningKey::from_pkcs8(&der, None).unwrap();
        assert_eq!(rs.alg, Alg::RS256);
        let t = ps.sign(&claims).unwrap();
        assert!(ps.verifier().unwrap().verify::<serde_json::Value>(&t).is_ok());
        assert!(rs.verifier().unwrap().verify::<serde_json::Value>(&t).is_err());
        // A key cannot be used for another family.
        assert!(SigningKey::from_pkcs8(&generate(Alg::ES256).unwrap(), Some(Alg::RS256)).is_err());
    }
}
