//! Test support: runs every golden script (toydb's goldenscript format) in a
//! directory of the crate, each with a fresh runner. Regenerate expected
//! output with `UPDATE_GOLDENFILES=1`.

/// Runs every script in `dir` (relative to the crate root), in name order.
pub fn run_scripts<R: goldenscript::Runner + Default>(dir: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no golden scripts in {}", dir.display());
    for p in paths {
        goldenscript::run(&mut R::default(), &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}
