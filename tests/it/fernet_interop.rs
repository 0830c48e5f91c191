//! Fernet interoperability with Python's `cryptography.fernet`: each side
//! decrypts what the other encrypted, and wrong keys are refused with the
//! clear message.

use crate::common;

use std::fs;
use std::path::Path;

use backupd::crypto::fernet::{self, DecryptError, Key, KeyRing};
use common::{python, require_python_fernet, temp_dir};

const PY_DECRYPT: &str = "import sys\n\
from cryptography.fernet import Fernet\n\
token = open(sys.argv[2], 'rb').read()\n\
open(sys.argv[3], 'wb').write(Fernet(sys.argv[1].encode()).decrypt(token))\n";

/// Prints a new key, and writes the token of the file argv[1] to argv[2].
const PY_ENCRYPT: &str = "import sys\n\
from cryptography.fernet import Fernet\n\
key = Fernet.generate_key()\n\
data = open(sys.argv[1], 'rb').read()\n\
open(sys.argv[2], 'wb').write(Fernet(key).encrypt(data))\n\
print(key.decode())\n";

/// Deterministic bytes that do not compress (xorshift).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Has Python encrypt `data` with a new key; returns the key text and the
/// token's path.
fn python_token(dir: &Path, label: &str, data: &[u8]) -> (String, std::path::PathBuf) {
    let plain = dir.join(format!("{label}.plain"));
    let token = dir.join(format!("{label}.fernet"));
    fs::write(&plain, data).unwrap();
    let key = python(
        PY_ENCRYPT,
        &[plain.to_str().unwrap(), token.to_str().unwrap()],
    );
    (key.trim().to_string(), token)
}

#[test]
fn python_decrypts_what_rust_encrypted() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let dir = temp_dir();
    let key = Key::generate();
    for len in [0, 5 * (1 << 20) + 123] {
        let data = pseudo_random(len);
        let token = dir.path().join(format!("rust-{len}.fernet"));
        let out = dir.path().join(format!("rust-{len}.out"));
        let written =
            fernet::encrypt_stream(&key, data.as_slice(), fs::File::create(&token).unwrap())
                .unwrap();
        assert_eq!(written, fs::metadata(&token).unwrap().len());
        python(
            PY_DECRYPT,
            &[
                &key.to_base64(),
                token.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert!(
            fs::read(&out).unwrap() == data,
            "Python's plaintext differs (len {len})"
        );
    }
}

#[test]
fn rust_decrypts_what_python_encrypted() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let dir = temp_dir();
    let data = pseudo_random(5 * (1 << 20) + 7);
    let (key, token) = python_token(dir.path(), "python", &data);
    let ring = KeyRing::parse(&key).unwrap();
    let mut out = Vec::new();
    let n = fernet::decrypt_file(&ring, &token, &mut out).unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(out == data, "Rust's plaintext differs");

    // The same token with a trailing newline (as `echo` or an editor leaves).
    let mut text = fs::read(&token).unwrap();
    text.push(b'\n');
    let with_newline = dir.path().join("python-newline.fernet");
    fs::write(&with_newline, &text).unwrap();
    let mut out = Vec::new();
    fernet::decrypt_file(&ring, &with_newline, &mut out).unwrap();
    assert!(out == data, "Rust's plaintext differs (trailing newline)");
}

#[test]
fn a_token_of_key_a_is_refused_with_key_b() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let dir = temp_dir();
    let (_key_a, token) = python_token(dir.path(), "key-a", b"secret dump");
    let key_b = KeyRing::from(Key::generate());
    let mut out = Vec::new();
    let err = fernet::decrypt_file(&key_b, &token, &mut out).unwrap_err();
    assert!(matches!(err, DecryptError::Rejected { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot decrypt {}: the key does not match or the file was altered",
            token.display()
        )
    );
    assert!(
        out.is_empty(),
        "nothing may be written before the tag verifies"
    );
}

#[test]
fn a_ring_decrypts_a_token_of_its_second_key() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let dir = temp_dir();
    let data = pseudo_random(100_003);
    let (old_key, token) = python_token(dir.path(), "rotated", &data);
    let new_key = Key::generate();
    let ring = KeyRing::parse(&format!("{},{old_key}", new_key.to_base64())).unwrap();
    assert_eq!(ring.encrypting_key(), &new_key);
    let mut out = Vec::new();
    fernet::decrypt_file(&ring, &token, &mut out).unwrap();
    assert!(out == data, "the ring's plaintext differs");
}
