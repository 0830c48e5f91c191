//! Fernet tokens, streamed in constant memory.
//!
//! A token is `base64url(0x80 || timestamp || IV || ciphertext || tag)`:
//! the timestamp is 8 bytes of big-endian seconds since the Unix epoch, the
//! IV 16 random bytes, the ciphertext AES-128-CBC of the plaintext with
//! PKCS#7 padding, and the tag HMAC-SHA256 (signing key) of every byte
//! before it. A key is the URL-safe base64 of 32 bytes: the first 16 are the
//! signing key, the last 16 the encryption key. Tokens and keys are written
//! with `=` padding, as Python's `cryptography.fernet` does, so either side
//! reads what the other writes.
//!
//! Encryption streams: [`encrypt_stream`] never holds more than fixed-size
//! buffers. Decryption must not hand out a byte before the tag is checked,
//! so [`decrypt_file`] reads the file twice: the first pass decodes and
//! authenticates it (against every key of a [`KeyRing`]), the second, only
//! after a key matched, decrypts it. Token timestamps are written but not
//! checked on decryption (there is no time-to-live): backups are old.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::Aes128;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::generic_array::GenericArray;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 0x80;
const BLOCK: usize = 16;
/// Version, timestamp and IV.
const HEADER_LEN: usize = 1 + 8 + 16;
const TAG_LEN: usize = 32;
/// The shortest token: header, one (padding) block, tag.
const MIN_TOKEN_LEN: u64 = (HEADER_LEN + BLOCK + TAG_LEN) as u64;
/// Bytes read or decrypted at a time (a multiple of the AES block).
const CHUNK: usize = 64 * 1024;
/// Bytes base64-encoded at a time: a multiple of 3, so only the last group
/// of a token is padded.
const RAW_CHUNK: usize = 3 * 16 * 1024;
/// Characters base64-decoded at a time: a multiple of 4.
const TEXT_CHUNK: usize = 64 * 1024;

/// URL-safe alphabet; `=` padding written, and optional when read.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------- keys

/// A Fernet key: a 16-byte signing key and a 16-byte encryption key.
/// Its `Debug` form never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    signing: [u8; 16],
    encryption: [u8; 16],
}

/// Why a key or a key ring does not parse. The messages never include the
/// key text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no Fernet key given")]
    Empty,
    #[error("Fernet key {position} is not URL-safe base64")]
    NotBase64 { position: usize },
    #[error("Fernet key {position} is {len} bytes long, not 32")]
    WrongLength { position: usize, len: usize },
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

/// `text` without surrounding whitespace (`\r` included) and quotes.
fn clean(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
}

impl Key {
    /// Parses the URL-safe base64 of 32 bytes (with or without `=` padding;
    /// surrounding whitespace and quotes are ignored).
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let text = clean(text);
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        Key::parse_at(text, 1)
    }

    fn parse_at(text: &str, position: usize) -> Result<Key, KeyError> {
        let raw = B64
            .decode(text)
            .map_err(|_| KeyError::NotBase64 { position })?;
        let raw: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength {
                position,
                len: raw.len(),
            })?;
        Ok(Key::from_bytes(&raw))
    }

    /// A key from its 32 raw bytes (signing key, then encryption key).
    pub fn from_bytes(raw: &[u8; 32]) -> Key {
        let mut signing = [0u8; 16];
        let mut encryption = [0u8; 16];
        signing.copy_from_slice(&raw[..16]);
        encryption.copy_from_slice(&raw[16..]);
        Key {
            signing,
            encryption,
        }
    }

    /// A new random key from the operating system's generator.
    ///
    /// # Panics
    /// When the operating system cannot give random bytes.
    pub fn generate() -> Key {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the operating system's random generator failed");
        Key::from_bytes(&raw)
    }

    /// The key as Python's `Fernet.generate_key()` writes it: 44 characters
    /// of URL-safe base64 with padding.
    pub fn to_base64(&self) -> String {
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(&self.signing);
        raw[16..].copy_from_slice(&self.encryption);
        B64.encode(raw)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.signing).expect("HMAC takes keys of any length")
    }
}

/// One or more keys: the first encrypts, every one is tried to decrypt (so
/// keys can be rotated: put the new key first and keep the old ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing(Vec<Key>);

impl KeyRing {
    /// Parses comma-separated keys (`"k1,k2"`); whitespace, `\r` and quotes
    /// around each are ignored, and so are empty entries. Positions in
    /// errors count the comma-separated entries from 1.
    pub fn parse(text: &str) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        for (i, entry) in text.split(',').enumerate() {
            let entry = clean(entry);
            if !entry.is_empty() {
                keys.push(Key::parse_at(entry, i + 1)?);
            }
        }
        KeyRing::new(keys)
    }

    /// A ring of `keys`, the first of which encrypts.
    pub fn new(keys: Vec<Key>) -> Result<KeyRing, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing(keys))
    }

    /// The key that encrypts: the first.
    pub fn encrypting_key(&self) -> &Key {
        &self.0[0]
    }

    pub fn keys(&self) -> &[Key] {
        &self.0
    }
}

impl From<Key> for KeyRing {
    fn from(key: Key) -> KeyRing {
        KeyRing(vec![key])
    }
}

// ---------------------------------------------------------------- errors

/// Why a token was not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// Wrong key, altered or truncated token, bad base64, unknown version:
    /// deliberately one message for all.
    #[error("cannot decrypt {name}: the key does not match or the file was altered")]
    Rejected { name: String },
    #[error("cannot read {name}: {source}")]
    Read { name: String, source: io::Error },
    #[error("cannot write the decrypted data of {name}: {source}")]
    Write { name: String, source: io::Error },
}

/// The token is not well-formed base64 (carried inside an `io::Error` out of
/// [`B64Reader`]).
#[derive(Debug)]
struct BadToken;

impl fmt::Display for BadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token is not URL-safe base64")
    }
}

impl std::error::Error for BadToken {}

fn bad_token() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, BadToken)
}

fn is_bad_token(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BadToken>())
}

/// `reader.read`, retried while interrupted.
fn read_some(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------- base64 streams

/// Base64-encodes what is put into it onto `inner`, in fixed buffers.
struct B64Writer<W: Write> {
    inner: W,
    raw: Vec<u8>,
    raw_len: usize,
    text: Vec<u8>,
    written: u64,
}

impl<W: Write> B64Writer<W> {
    fn new(inner: W) -> Self {
        B64Writer {
            inner,
            raw: vec![0; RAW_CHUNK],
            raw_len: 0,
            text: vec![0; RAW_CHUNK / 3 * 4],
            written: 0,
        }
    }

    fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = (RAW_CHUNK - self.raw_len).min(data.len());
            self.raw[self.raw_len..self.raw_len + take].copy_from_slice(&data[..take]);
            self.raw_len += take;
            data = &data[take..];
            if self.raw_len == RAW_CHUNK {
                self.encode_raw()?;
            }
        }
        Ok(())
    }

    /// Encodes and writes the buffered bytes; only the last call of a token
    /// may hold a number of bytes that is not a multiple of 3.
    fn encode_raw(&mut self) -> io::Result<()> {
        let n = B64
            .encode_slice(&self.raw[..self.raw_len], &mut self.text)
            .expect("the text buffer holds an encoded chunk");
        self.inner.write_all(&self.text[..n])?;
        self.written += n as u64;
        self.raw_len = 0;
        Ok(())
    }

    /// Writes the rest (with padding) and flushes; returns the writer below
    /// and the characters written in all.
    fn finish(mut self) -> io::Result<(W, u64)> {
        if self.raw_len > 0 {
            self.encode_raw()?;
        }
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }
}

/// Reads the bytes that the base64 text of `inner` decodes to, in fixed
/// buffers. Padding is optional; whitespace (such as a final newline) is
/// allowed only at the end. Malformed text gives an `InvalidData` error
/// carrying [`BadToken`].
struct B64Reader<R: Read> {
    inner: R,
    input: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    text: Vec<u8>,
    text_len: usize,
    /// Characters of base64 text seen, in all.
    chars: u64,
    seen_pad: bool,
    seen_space: bool,
    out: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    done: bool,
}

impl<R: Read> B64Reader<R> {
    fn new(inner: R) -> Self {
        B64Reader {
            inner,
            input: vec![0; CHUNK],
            in_pos: 0,
            in_len: 0,
            text: vec![0; TEXT_CHUNK],
            text_len: 0,
            chars: 0,
            seen_pad: false,
            seen_space: false,
            out: vec![0; TEXT_CHUNK / 4 * 3],
            out_pos: 0,
            out_len: 0,
            done: false,
        }
    }

    fn decode_text(&mut self) -> io::Result<()> {
        let n = B64
            .decode_slice(&self.text[..self.text_len], &mut self.out)
            .map_err(|_| bad_token())?;
        self.text_len = 0;
        self.out_pos = 0;
        self.out_len = n;
        Ok(())
    }

    /// Decodes the next chunk of text into `out`; sets `done` at the end.
    fn refill(&mut self) -> io::Result<()> {
        loop {
            if self.in_pos == self.in_len {
                let n = read_some(&mut self.inner, &mut self.input)?;
                if n == 0 {
                    // The last group, padded or not; padded text is whole
                    // groups of 4.
                    if self.seen_pad && !self.chars.is_multiple_of(4) {
                        return Err(bad_token());
                    }
                    self.done = true;
                    return self.decode_text();
                }
                self.in_pos = 0;
                self.in_len = n;
            }
            let c = self.input[self.in_pos];
            if matches!(c, b'\n' | b'\r' | b' ' | b'\t') {
                self.seen_space = true;
                self.in_pos += 1;
                continue;
            }
            if self.seen_space || (self.seen_pad && c != b'=') {
                return Err(bad_token());
            }
            if self.text_len == self.text.len() {
                // A full chunk with more text after it: it cannot hold the
                // padding (padding ends a 4-aligned group, and so the text).
                if self.seen_pad {
                    return Err(bad_token());
                }
                return self.decode_text();
            }
            self.seen_pad |= c == b'=';
            self.text[self.text_len] = c;
            self.text_len += 1;
            self.chars += 1;
            self.in_pos += 1;
        }
    }
}

impl<R: Read> Read for B64Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out_len {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.out_len - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------- encryption

/// Streams the plaintext of `input` into a Fernet token (URL-safe base64
/// with padding, no newline) written to `output`, with a random IV and the
/// current time. Memory stays constant (fixed buffers of ~64 KiB). Returns
/// the number of bytes written.
pub fn encrypt_stream(key: &Key, input: impl Read, output: impl Write) -> io::Result<u64> {
    encrypt_through(FernetWriter::new(key, output)?, input)
}

/// [`encrypt_stream`] with a given IV and timestamp, for deterministic
/// tests against the spec's vectors. Never reuse an IV in real use.
#[doc(hidden)]
pub fn encrypt_stream_at(
    key: &Key,
    iv: [u8; 16],
    timestamp: u64,
    input: impl Read,
    output: impl Write,
) -> io::Result<u64> {
    encrypt_through(FernetWriter::with_iv(key, iv, timestamp, output)?, input)
}

fn encrypt_through<W: Write>(mut writer: FernetWriter<W>, mut input: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n])?;
    }
    Ok(writer.finish()?.1)
}

/// The write side of [`encrypt_stream`]: what is written to it is the
/// plaintext, what reaches `inner` is the token, so it can sit at the end of
/// a pipeline (gzip → Fernet → file). [`FernetWriter::finish`] writes the
/// padding and the tag; a writer dropped without it leaves an invalid
/// (truncated) token, never a valid one of partial data.
pub struct FernetWriter<W: Write> {
    cipher: cbc::Encryptor<Aes128>,
    mac: HmacSha256,
    out: B64Writer<W>,
    /// Plaintext not yet encrypted: less than a block between writes.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Whole blocks being encrypted, reused between writes.
    work: Vec<u8>,
}

impl<W: Write> FernetWriter<W> {
    /// Starts a token with a random IV and the current time.
    pub fn new(key: &Key, inner: W) -> io::Result<Self> {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv)
            .map_err(|e| io::Error::other(format!("cannot get random bytes for the IV: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::with_iv(key, iv, now, inner)
    }

    fn with_iv(key: &Key, iv: [u8; 16], timestamp: u64, inner: W) -> io::Result<Self> {
        let mut mac = key.mac();
        let mut out = B64Writer::new(inner);
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..9].copy_from_slice(&timestamp.to_be_bytes());
        header[9..].copy_from_slice(&iv);
        mac.update(&header);
        out.put(&header)?;
        Ok(FernetWriter {
            cipher: cbc::Encryptor::<Aes128>::new(&key.encryption.into(), &iv.into()),
            mac,
            out,
            pending: [0; BLOCK],
            pending_len: 0,
            work: Vec::with_capacity(CHUNK),
        })
    }

    fn encrypt_work(&mut self) -> io::Result<()> {
        for block in self.work.chunks_exact_mut(BLOCK) {
            self.cipher
                .encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        self.mac.update(&self.work);
        self.out.put(&self.work)?;
        self.work.clear();
        Ok(())
    }

    /// Pads and encrypts the last block, appends the tag and flushes;
    /// returns the writer below and the token's length in characters.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        // PKCS#7: 1 to 16 bytes, each holding the count.
        let pad = BLOCK - self.pending_len;
        self.pending[self.pending_len..].fill(pad as u8);
        self.work.clear();
        self.work.extend_from_slice(&self.pending);
        self.encrypt_work()?;
        let tag = self.mac.clone().finalize().into_bytes();
        self.out.put(&tag)?;
        self.out.finish()
    }
}

impl<W: Write> Write for FernetWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let accepted = data.len();
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return Ok(accepted);
            }
            self.work.extend_from_slice(&self.pending);
            self.pending_len = 0;
        }
        while !data.is_empty() {
            let room = CHUNK - self.work.len();
            let whole = (data.len().min(room) / BLOCK) * BLOCK;
            if whole == 0 {
                break;
            }
            self.work.extend_from_slice(&data[..whole]);
            data = &data[whole..];
            if self.work.len() == CHUNK {
                self.encrypt_work()?;
            }
        }
        if !self.work.is_empty() {
            self.encrypt_work()?;
        }
        // Less than a block is left.
        self.pending[..data.len()].copy_from_slice(data);
        self.pending_len = data.len();
        Ok(accepted)
    }

    /// Flushes the ciphertext written so far (less than a block of
    /// plaintext may still be held back until `finish`).
    fn flush(&mut self) -> io::Result<()> {
        self.out.inner.flush()
    }
}

/// The token of `plaintext` (for small data and tests).
///
/// # Panics
/// When the operating system cannot give random bytes.
pub fn encrypt_bytes(key: &Key, plaintext: &[u8]) -> String {
    let mut token = Vec::new();
    encrypt_stream(key, plaintext, &mut token).expect("cannot encrypt into memory");
    String::from_utf8(token).expect("base64 is ASCII")
}

// ---------------------------------------------------------------- decryption

/// Decrypts the Fernet token in the file `path` into `output`, in constant
/// memory, and returns the number of plaintext bytes written.
///
/// The first pass reads the whole file, base64-decoding it (padded or not,
/// a trailing newline allowed) and checking its tag against each key of
/// `ring`; nothing is written then. Only when a key matches does the second
/// pass decrypt into `output`. The second pass checks the tag again: if the
/// file changes between the passes, the result is an error, but `output`
/// may already hold part of the plaintext, so write it to a temporary file
/// and discard that on any error.
///
/// A wrong key, a truncated or altered file, bad base64 and an unknown
/// version all give [`DecryptError::Rejected`]: "cannot decrypt NAME: the
/// key does not match or the file was altered".
pub fn decrypt_file(ring: &KeyRing, path: &Path, output: impl Write) -> Result<u64, DecryptError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| DecryptError::Read {
        name: name.clone(),
        source,
    })?;
    decrypt_seekable(ring, file, &name, output)
}

/// [`decrypt_file`] over an already open input (a restore input's
/// descriptor, read with positional reads), named `name` in errors.
pub fn decrypt_from<R: Read + Seek>(
    ring: &KeyRing,
    input: R,
    name: &str,
    output: impl Write,
) -> Result<u64, DecryptError> {
    decrypt_seekable(ring, input, name, output)
}

/// The plaintext of `token` (for small data and tests); errors name the
/// input "the token".
pub fn decrypt_bytes(ring: &KeyRing, token: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let mut plaintext = Vec::new();
    decrypt_seekable(ring, io::Cursor::new(token), "the token", &mut plaintext)?;
    Ok(plaintext)
}

fn decrypt_seekable<R: Read + Seek>(
    ring: &KeyRing,
    mut input: R,
    name: &str,
    mut output: impl Write,
) -> Result<u64, DecryptError> {
    let rejected = || DecryptError::Rejected {
        name: name.to_string(),
    };
    let read_error = |source: io::Error| {
        if is_bad_token(&source) || source.kind() == io::ErrorKind::UnexpectedEof {
            rejected()
        } else {
            DecryptError::Read {
                name: name.to_string(),
                source,
            }
        }
    };

    // Pass 1: authenticate. The last TAG_LEN decoded bytes seen so far are
    // held back at the front of `buf`: the tag is the end of the stream.
    let mut macs: Vec<HmacSha256> = ring.0.iter().map(Key::mac).collect();
    let mut reader = B64Reader::new(&mut input);
    let mut buf = vec![0u8; TAG_LEN + CHUNK];
    let mut held = 0;
    let mut total: u64 = 0;
    let mut version = None;
    loop {
        let n = read_some(&mut reader, &mut buf[held..]).map_err(read_error)?;
        if n == 0 {
            break;
        }
        version.get_or_insert(buf[0]);
        total += n as u64;
        held += n;
        if held > TAG_LEN {
            let feed = held - TAG_LEN;
            for mac in &mut macs {
                mac.update(&buf[..feed]);
            }
            buf.copy_within(feed..held, 0);
            held = TAG_LEN;
        }
    }
    drop(reader);
    let well_formed = version == Some(VERSION)
        && total >= MIN_TOKEN_LEN
        && (total - (HEADER_LEN + TAG_LEN) as u64).is_multiple_of(BLOCK as u64);
    if !well_formed {
        return Err(rejected());
    }
    let key = macs
        .into_iter()
        .position(|mac| mac.verify_slice(&buf[..TAG_LEN]).is_ok())
        .map(|i| &ring.0[i])
        .ok_or_else(rejected)?;

    // Pass 2: decrypt, authenticating again in case the input changed.
    input.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let mut reader = B64Reader::new(&mut input);
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).map_err(read_error)?;
    if header[0] != VERSION {
        return Err(rejected());
    }
    let mut mac = key.mac();
    mac.update(&header);
    let iv: [u8; 16] = header[9..].try_into().expect("the header ends with the IV");
    let mut cipher = cbc::Decryptor::<Aes128>::new(&key.encryption.into(), &iv.into());

    let write_error = |source: io::Error| DecryptError::Write {
        name: name.to_string(),
        source,
    };
    let mut remaining = total - (HEADER_LEN + TAG_LEN) as u64;
    let mut written: u64 = 0;
    let chunk = &mut buf[..CHUNK];
    while remaining > 0 {
        let n = remaining.min(CHUNK as u64) as usize;
        reader.read_exact(&mut chunk[..n]).map_err(read_error)?;
        mac.update(&chunk[..n]);
        for block in chunk[..n].chunks_exact_mut(BLOCK) {
            cipher.decrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        remaining -= n as u64;
        let plain = if remaining == 0 {
            let pad = usize::from(chunk[n - 1]);
            let valid = (1..=BLOCK).contains(&pad)
                && chunk[n - pad..n].iter().all(|&b| usize::from(b) == pad);
            if !valid {
                return Err(rejected());
            }
            n - pad
        } else {
            n
        };
        output.write_all(&chunk[..plain]).map_err(write_error)?;
        written += plain as u64;
    }
    let mut tag = [0u8; TAG_LEN];
    reader.read_exact(&mut tag).map_err(read_error)?;
    let mut rest = [0u8; 1];
    if read_some(&mut reader, &mut rest).map_err(read_error)? != 0
        || mac.verify_slice(&tag).is_err()
    {
        return Err(rejected());
    }
    output.flush().map_err(write_error)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the Fernet spec's generate.json / verify.json.
    const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_NOW: u64 = 499_162_800; // 1985-10-26T01:20:00-07:00
    const SPEC_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

    fn spec_iv() -> [u8; 16] {
        std::array::from_fn(|i| i as u8)
    }

    fn spec_key() -> Key {
        Key::parse(SPEC_KEY).unwrap()
    }

    fn spec_ring() -> KeyRing {
        KeyRing::from(spec_key())
    }

    fn encrypt_at(key: &Key, iv: [u8; 16], now: u64, data: &[u8]) -> String {
        let mut out = Vec::new();
        let n = encrypt_stream_at(key, iv, now, data, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        String::from_utf8(out).unwrap()
    }

    fn assert_rejected(result: Result<Vec<u8>, DecryptError>) {
        match result {
            Err(e @ DecryptError::Rejected { .. }) => assert_eq!(
                e.to_string(),
                "cannot decrypt the token: the key does not match or the file was altered"
            ),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Decodes `token`, lets `edit` change the bytes, and re-encodes them;
    /// with `resign` the tag is recomputed with the spec key.
    fn tamper(token: &str, resign: bool, edit: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut raw = B64.decode(token).unwrap();
        edit(&mut raw);
        if resign {
            let body = raw.len() - TAG_LEN;
            let mut mac = spec_key().mac();
            mac.update(&raw[..body]);
            raw.truncate(body);
            raw.extend_from_slice(&mac.finalize().into_bytes());
        }
        B64.encode(raw)
    }

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn spec_generate_vector() {
        assert_eq!(
            encrypt_at(&spec_key(), spec_iv(), SPEC_NOW, b"hello"),
            SPEC_TOKEN
        );
    }

    #[test]
    fn spec_verify_vector() {
        assert_eq!(
            decrypt_bytes(&spec_ring(), SPEC_TOKEN.as_bytes()).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn accepts_unpadded_and_a_trailing_newline() {
        let unpadded = SPEC_TOKEN.trim_end_matches('=');
        assert_eq!(
            decrypt_bytes(&spec_ring(), unpadded.as_bytes()).unwrap(),
            b"hello"
        );
        for suffix in ["\n", "\r\n"] {
            let token = format!("{SPEC_TOKEN}{suffix}");
            assert_eq!(
                decrypt_bytes(&spec_ring(), token.as_bytes()).unwrap(),
                b"hello"
            );
        }
    }

    #[test]
    fn rejects_a_bad_tag() {
        let token = tamper(SPEC_TOKEN, false, |raw| *raw.last_mut().unwrap() ^= 1);
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
        let token = tamper(SPEC_TOKEN, false, |raw| raw[HEADER_LEN] ^= 0x40);
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
    }

    #[test]
    fn rejects_truncated_tokens() {
        for cut in [1, 4, 16, 32, 48, SPEC_TOKEN.len()] {
            let token = &SPEC_TOKEN[..SPEC_TOKEN.len() - cut];
            assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
        }
        // Too short even when re-signed: no ciphertext block left.
        let token = tamper(SPEC_TOKEN, true, |raw| {
            raw.drain(HEADER_LEN..HEADER_LEN + BLOCK);
        });
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
        // Ciphertext not a whole number of blocks, re-signed.
        let token = tamper(SPEC_TOKEN, true, |raw| {
            raw.remove(HEADER_LEN);
        });
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
    }

    #[test]
    fn rejects_a_wrong_version_even_when_signed() {
        let token = tamper(SPEC_TOKEN, true, |raw| raw[0] = 0x81);
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
    }

    #[test]
    fn rejects_bad_padding_even_when_signed() {
        // A different IV changes the last plaintext block only when the
        // ciphertext is one block: "hello" + padding becomes garbage.
        let token = tamper(SPEC_TOKEN, true, |raw| raw[9 + 15] ^= 0x01);
        assert_rejected(decrypt_bytes(&spec_ring(), token.as_bytes()));
    }

    #[test]
    fn rejects_bad_base64() {
        let mut bad = SPEC_TOKEN.to_string();
        bad.replace_range(10..11, "+");
        assert_rejected(decrypt_bytes(&spec_ring(), bad.as_bytes()));
        let inner_newline = format!("{}\n{}", &SPEC_TOKEN[..20], &SPEC_TOKEN[20..]);
        assert_rejected(decrypt_bytes(&spec_ring(), inner_newline.as_bytes()));
        let text_after_padding = format!("{SPEC_TOKEN}AAAA");
        assert_rejected(decrypt_bytes(&spec_ring(), text_after_padding.as_bytes()));
        assert_rejected(decrypt_bytes(&spec_ring(), b""));
        assert_rejected(decrypt_bytes(&spec_ring(), b"\n"));
    }

    #[test]
    fn rejects_another_key() {
        let other = KeyRing::from(Key::generate());
        assert_rejected(decrypt_bytes(&other, SPEC_TOKEN.as_bytes()));
    }

    #[test]
    fn round_trips_with_chunked_reads() {
        let key = Key::generate();
        let ring = KeyRing::from(key.clone());
        for len in [0, 1, 15, 16, 17, 3 * (1 << 20) + 5] {
            let data = pseudo_random(len);
            for step in [1, 7, 4099, usize::MAX] {
                if len > 100_000 && step < 4099 {
                    continue;
                }
                let mut token = Vec::new();
                let n = encrypt_stream(&key, Trickle { data: &data, step }, &mut token).unwrap();
                assert_eq!(n, token.len() as u64);
                let raw_len = (HEADER_LEN + (len / BLOCK + 1) * BLOCK + TAG_LEN) as u64;
                assert_eq!(n, raw_len.div_ceil(3) * 4, "len {len}");
                assert_eq!(decrypt_bytes(&ring, &token).unwrap(), data, "len {len}");
            }
        }
    }

    #[test]
    fn writer_gives_the_same_token_whatever_the_write_sizes() {
        let key = Key::generate();
        let data = pseudo_random(200_003);
        let mut expected = Vec::new();
        encrypt_stream_at(&key, [7; 16], 1_700_000_000, &data[..], &mut expected).unwrap();
        for sizes in [
            &[1usize, 15, 16, 17][..],
            &[70_000, 3],
            &[65_536, 65_520, 16],
        ] {
            let mut writer =
                FernetWriter::with_iv(&key, [7; 16], 1_700_000_000, Vec::new()).unwrap();
            let mut rest = &data[..];
            for &size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let take = size.min(rest.len());
                writer.write_all(&rest[..take]).unwrap();
                rest = &rest[take..];
            }
            let (token, n) = writer.finish().unwrap();
            assert_eq!(n, token.len() as u64);
            assert!(token == expected, "write sizes {sizes:?}");
        }
    }

    #[test]
    fn decrypt_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate();
        let ring = KeyRing::new(vec![Key::generate(), key.clone()]).unwrap();
        for len in [0, 17, 3 * (1 << 20) + 5] {
            let data = pseudo_random(len);
            let path = dir.path().join(format!("data-{len}.fernet"));
            let file = File::create(&path).unwrap();
            encrypt_stream(&key, data.as_slice(), file).unwrap();
            let mut out = Vec::new();
            let n = decrypt_file(&ring, &path, &mut out).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(out, data);
        }
        let missing = dir.path().join("missing");
        let err = decrypt_file(&ring, &missing, Vec::new()).unwrap_err();
        assert!(matches!(err, DecryptError::Read { .. }), "{err:?}");
    }

    #[test]
    fn keys_parse_print_and_generate() {
        let key = spec_key();
        assert_eq!(format!("{key:?}"), "Key(***)");
        assert_eq!(key.to_base64(), SPEC_KEY);
        assert_eq!(Key::parse(SPEC_KEY.trim_end_matches('=')).unwrap(), key);
        let generated = Key::generate();
        let text = generated.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(Key::parse(&text).unwrap(), generated);
        assert_ne!(Key::generate(), generated);

        assert_eq!(Key::parse("  "), Err(KeyError::Empty));
        assert_eq!(Key::parse("a+b/"), Err(KeyError::NotBase64 { position: 1 }));
        assert_eq!(
            Key::parse("AAAA"),
            Err(KeyError::WrongLength {
                position: 1,
                len: 3
            })
        );
    }

    #[test]
    fn key_rings_parse() {
        let other = Key::generate();
        let text = format!(" \"{}\" ,\r\n'{SPEC_KEY}'\r\n", other.to_base64());
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.keys(), &[other.clone(), spec_key()]);
        assert_eq!(ring.encrypting_key(), &other);
        assert_eq!(format!("{ring:?}"), "KeyRing([Key(***), Key(***)])");
        // The second key decrypts the spec token.
        assert_eq!(
            decrypt_bytes(&ring, SPEC_TOKEN.as_bytes()).unwrap(),
            b"hello"
        );

        assert_eq!(KeyRing::parse(" , \r\n"), Err(KeyError::Empty));
        assert_eq!(
            KeyRing::parse(&format!("{SPEC_KEY},,nope!")),
            Err(KeyError::NotBase64 { position: 3 })
        );
    }
}
