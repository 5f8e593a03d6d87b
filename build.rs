//! Generates the gRPC code for both worlds: real tonic and the madsim shim.
//! `protoc` comes from the `protoc-bin-vendored` crate; no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/rangedb.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    println!("cargo:rerun-if-changed=proto/etcd");
    tonic_build::configure()
        .compile_protos(&["proto/rangedb.proto", "proto/health.proto"], &["proto"])?;
    // etcd's v3 API (vendored, see proto/etcd/): the gateway's server side.
    tonic_build::configure().compile_protos(
        &[
            "proto/etcd/rpc.proto",
            "proto/etcd/kv.proto",
            "proto/etcd/auth.proto",
        ],
        &["proto/etcd"],
    )?;
    Ok(())
}
