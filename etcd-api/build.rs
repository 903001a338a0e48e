//! Compiles etcd's v3 API (`proto/`) with protox, a protobuf compiler in Rust (no `protoc`
//! to install), into prost messages and tonic services, clients and servers both.

fn main() -> std::io::Result<()> {
    let files = [
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/api/mvccpb/kv.proto",
        "etcd/api/authpb/auth.proto",
    ];
    let descriptors =
        protox::compile(files, ["proto"]).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    for file in files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    Ok(())
}
