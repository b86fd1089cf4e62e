//! `--ciphers`: the measurement behind the secure transport's choice of AEAD. Both Noise
//! suites peerlink could use, through `snow` with its ring resolver, encrypt and decrypt
//! records of the sizes the record layer produces (a full 65,519-byte record, and a small one
//! carrying a few 256-byte frames); prints MB/s of plaintext per suite.

use std::time::{Duration, Instant};

/// Runs the comparison and prints one line per suite and size.
pub fn compare() -> Result<(), String> {
    for suite in [
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_XX_25519_ChaChaPoly_SHA256",
    ] {
        for size in [65_519usize, 1_024] {
            let mbps = measure(suite, size)?;
            println!("cipher {suite}: {size} B records, encrypt + decrypt: {mbps:.0} MB/s");
        }
    }
    Ok(())
}

fn measure(suite: &str, size: usize) -> Result<f64, String> {
    let err = |e: snow::Error| e.to_string();
    let params: snow::params::NoiseParams = suite.parse().map_err(err)?;
    let b = snow::Builder::new(params.clone());
    let (ki, kr) = (
        b.generate_keypair().map_err(err)?,
        b.generate_keypair().map_err(err)?,
    );
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(&ki.private)
        .map_err(err)?
        .build_initiator()
        .map_err(err)?;
    let mut r = snow::Builder::new(params)
        .local_private_key(&kr.private)
        .map_err(err)?
        .build_responder()
        .map_err(err)?;
    let mut msg = vec![0u8; 1024];
    let mut payload = vec![0u8; 1024];
    for step in 0..3 {
        let (w, rd) = if step % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let n = w.write_message(&[], &mut msg).map_err(err)?;
        rd.read_message(&msg[..n], &mut payload).map_err(err)?;
    }
    let mut i = i.into_transport_mode().map_err(err)?;
    let mut r = r.into_transport_mode().map_err(err)?;
    let plain = vec![0x5au8; size];
    let mut wire = vec![0u8; size + 16];
    let mut out = vec![0u8; size + 16];
    let mut bytes = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(700) {
        for _ in 0..16 {
            let n = i.write_message(&plain, &mut wire).map_err(err)?;
            r.read_message(&wire[..n], &mut out).map_err(err)?;
            bytes += size;
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}
