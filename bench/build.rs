//! Generates the etcd v3 KV client (the subset in proto/etcd_kv.proto).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/etcd_kv.proto");
    tonic_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd_kv.proto"], &["proto"])?;
    Ok(())
}
