//! etcd's v3 gRPC API as etch serves it (`etchd --listen-grpc`): the messages and the
//! services, generated at build time from `proto/`, which holds etcd's public wire
//! contract (package, service, message and field names and numbers) written for etch.
//!
//! The node implements the servers (`etch-host`'s `server::grpc`); the tests use the
//! clients.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The records of etcd's key-value store (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (`authpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The services and their messages (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
