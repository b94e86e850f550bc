//! Compiles `proto/ember.proto` with protox (a pure-Rust protobuf compiler), so
//! building Ember never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ember.proto");
    let fds = protox::compile(["proto/ember.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
