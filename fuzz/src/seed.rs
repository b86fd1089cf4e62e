//! Writes the seed corpus (`fuzz/corpus/<target>/seed-*`) from PROTOCOL.md's hex vectors, so that
//! every fuzzing run starts from every frame and message the spec shows.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("../PROTOCOL.md"))?;
    for (target, seeds) in peerlink_fuzz::seeds(&spec) {
        let dir = root.join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
