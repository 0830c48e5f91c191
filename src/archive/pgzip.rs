//! Parallel gzip that still produces one ordinary gzip member.
//!
//! Single-threaded deflate is several times slower than `pg_dump` itself, so
//! the input is cut into blocks that worker threads compress at the same time,
//! the way pigz does it: every block but the last ends with a sync flush (a
//! byte-aligned, non-final deflate block), and each block is primed with the
//! last 32 KiB of the block before it as its dictionary, so the concatenation
//! is one valid deflate stream that compresses as well as a serial one.
//!
//! Memory is bounded: at most `in_flight` blocks (input plus output) exist at
//! any time, whatever the size of the input.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per block. Large enough that per-block overhead is noise,
/// small enough that a handful in flight stays well under a few MiB.
pub const BLOCK_SIZE: usize = 128 * 1024;
const WINDOW: usize = 32 * 1024;

/// The fixed gzip header: deflate, no name, no mtime (reproducible), Unix.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

struct Job {
    seq: u64,
    data: Arc<Vec<u8>>,
    dictionary: Option<Arc<Vec<u8>>>,
    last: bool,
}

struct Done {
    seq: u64,
    compressed: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: usize,
}

/// A `Write` that gzips into `W` using `threads` compression workers.
pub struct ParallelGzip<W: Write + Send + 'static> {
    level: Compression,
    block: Vec<u8>,
    previous: Option<Arc<Vec<u8>>>,
    next_seq: u64,
    jobs: Option<SyncSender<Job>>,
    permits: SyncSender<()>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    pub fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let in_flight = threads * 2 + 2;
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let (done_tx, done_rx) = sync_channel::<Done>(in_flight);
        // Each block takes a permit before it is dispatched and the writer hands it
        // back once the block is on disk: this is what bounds memory when the
        // disk is slower than the compressors.
        let (permit_tx, permit_rx) = sync_channel::<()>(in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let level = Compression::new(level);
        let failed = Arc::new(Mutex::new(None));

        let workers = (0..threads)
            .map(|i| {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || compress_worker(level, &job_rx, &done_tx))
            })
            .collect::<io::Result<Vec<_>>>()?;
        drop(done_tx);

        let writer_failed = Arc::clone(&failed);
        let writer = std::thread::Builder::new()
            .name("gzip-writer".into())
            .spawn(move || {
                let result = write_in_order(inner, &done_rx, &permit_rx);
                if let Err(e) = &result {
                    *writer_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
                result
            })?;

        Ok(Self {
            level,
            block: Vec::with_capacity(BLOCK_SIZE),
            previous: None,
            next_seq: 0,
            jobs: Some(job_tx),
            permits: permit_tx,
            workers,
            writer: Some(writer),
            failed,
        })
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if let Some(message) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(io::Error::other(message));
        }
        let data = Arc::new(std::mem::replace(
            &mut self.block,
            Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }),
        ));
        let job = Job {
            seq: self.next_seq,
            data: Arc::clone(&data),
            dictionary: self.previous.take(),
            last,
        };
        self.next_seq += 1;
        self.previous = Some(data);
        let closed = || io::Error::other("compression stopped early");
        self.permits
            .send(())
            .map_err(|_| self.writer_error().unwrap_or_else(closed))?;
        self.jobs
            .as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| self.writer_error().unwrap_or_else(closed))
    }

    fn writer_error(&self) -> Option<io::Error> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(io::Error::other)
    }

    /// Compresses what is left, writes the gzip trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        self.jobs = None;
        for worker in self.workers.drain(..) {
            worker
                .join()
                .map_err(|_| io::Error::other("a compression thread panicked"))?;
        }
        let writer = self.writer.take().expect("finish runs once");
        writer
            .join()
            .map_err(|_| io::Error::other("the compression writer thread panicked"))?
    }

    /// The compression level in use (for logs).
    pub fn level(&self) -> u32 {
        self.level.level()
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            let room = BLOCK_SIZE - self.block.len();
            let take = room.min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK_SIZE {
                self.dispatch(false)?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Closing the job queue lets the workers and the writer run dry and exit;
        // an unfinished stream is simply abandoned by its owner.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn compress_worker(level: Compression, jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let compressed = deflate_block(level, &job);
        let finished = Done {
            seq: job.seq,
            compressed,
            crc,
            len: job.data.len(),
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

fn deflate_block(level: Compression, job: &Job) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(level, false);
    if let Some(dictionary) = &job.dictionary {
        let tail = &dictionary[dictionary.len().saturating_sub(WINDOW)..];
        deflate
            .set_dictionary(tail)
            .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let mut input = &job.data[..];
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let before_in = deflate.total_in();
        let status = deflate
            .compress_vec(input, &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let consumed = (deflate.total_in() - before_in) as usize;
        input = &input[consumed..];
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once all input is consumed and the
            // compressor stopped short of filling the output buffer.
            Status::Ok | Status::BufError if !job.last && input.is_empty() && room_left => {
                return Ok(out);
            }
            Status::Ok | Status::BufError => continue,
        }
    }
}

fn write_in_order<W: Write>(
    mut inner: W,
    done: &Receiver<Done>,
    permits: &Receiver<()>,
) -> io::Result<W> {
    inner.write_all(&GZIP_HEADER)?;
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut size: u64 = 0;
    while let Ok(block) = done.recv() {
        pending.insert(block.seq, block);
        while let Some(block) = pending.remove(&next) {
            let compressed = block.compressed?;
            inner.write_all(&compressed)?;
            crc.combine(&block.crc);
            size += block.len as u64;
            next += 1;
            let _ = permits.try_recv();
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other(
            "compression stopped before every block was written",
        ));
    }
    inner.write_all(&crc.finalize().to_le_bytes())?;
    // ISIZE is the input length modulo 2^32, as RFC 1952 defines it.
    inner.write_all(&(size as u32).to_le_bytes())?;
    inner.flush()?;
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn roundtrip(input: &[u8], threads: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), 6, threads).unwrap();
        // Odd-sized writes exercise block boundaries that fall inside a write.
        for chunk in input.chunks(7919) {
            gz.write_all(chunk).unwrap();
        }
        let compressed = gz.finish().unwrap();
        let mut out = Vec::new();
        GzDecoder::new(&compressed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input);
        compressed
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 3 == 0 {
                    b"abcdefgh \n"[(state % 10) as usize]
                } else {
                    (state % 26) as u8 + b'a'
                }
            })
            .collect()
    }

    #[test]
    fn empty_input_is_a_valid_gzip_file() {
        roundtrip(b"", 2);
    }

    #[test]
    fn input_of_exactly_one_block_round_trips() {
        roundtrip(&sample(BLOCK_SIZE), 2);
    }

    #[test]
    fn many_blocks_round_trip_with_several_threads() {
        roundtrip(&sample(BLOCK_SIZE * 9 + 123), 3);
    }

    #[test]
    fn dictionaries_keep_the_ratio_of_a_serial_compressor() {
        let data = sample(BLOCK_SIZE * 8);
        let parallel = roundtrip(&data, 2).len();
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len();
        assert!(
            parallel as f64 <= serial as f64 * 1.02,
            "{parallel} vs {serial}"
        );
    }

    #[test]
    fn the_file_is_a_single_gzip_member() {
        let compressed = roundtrip(&sample(BLOCK_SIZE * 3), 2);
        let mut decoder = flate2::read::GzDecoder::new(&compressed[..]);
        let mut sink = Vec::new();
        decoder.read_to_end(&mut sink).unwrap();
        // A multi-member file would leave the second member unread here.
        assert_eq!(sink.len(), BLOCK_SIZE * 3);
    }
}
