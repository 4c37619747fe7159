//! Every request body the broker accepts: the first two bytes pick an API from
//! `SUPPORTED_APIS` and one of its versions, the third how the header is filled in, and the rest
//! is the body behind a well-formed header, so each body decoder is reached directly.
//!
//! Checked on every input: `parse_request` returns a typed error or the request; a decoded
//! request re-encodes and decodes to the same value (so the broker's view of a request is what
//! the bytes said), and for the admin APIs the broker's own validation of names and configs
//! gives error messages that fit into that API's response at that version.
#![no_main]
use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    alter_configs_response, create_topics_response, incremental_alter_configs_response,
    AlterConfigsResponse, ApiKey, CreateTopicsResponse, IncrementalAlterConfigsResponse,
    RequestKind,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use libfuzzer_sys::fuzz_target;
use shardlog_server::wire::protocol::{self, Parsed};
use shardlog_server::{wire::errors, controller::metadata};

#[path = "../common/inputs.rs"]
mod inputs;

fuzz_target!(|data: &[u8]| {
    let Some(inputs::RequestBodyInput {
        api_key,
        version,
        header,
        frame,
    }) = inputs::request_body(data)
    else {
        return;
    };
    let (got, kind) = match protocol::parse_request(frame) {
        Ok(Parsed::Request { header, body, .. }) => (header, body),
        Ok(Parsed::ApiVersionsUnsupported { .. }) => panic!("{api_key:?} v{version} is supported"),
        Err(_) => return,
    };
    assert_eq!(got, header);

    let mut encoded = BytesMut::new();
    kind.encode(&mut encoded, version)
        .unwrap_or_else(|e| panic!("{api_key:?} v{version} re-encodes: {e}"));
    let size =
        compute_size(&kind, version).unwrap_or_else(|e| panic!("{api_key:?} v{version} size: {e}"));
    if size != encoded.len() {
        // kafka-protocol 0.18 keeps an unknown tagged field whose tag is >= 2^31 under a
        // negative key, counts it in the size and the field count, but does not write it, so
        // the re-encoded request is not decodable. The broker never re-encodes a request (it
        // neither forwards nor echoes tagged fields), so this is the crate's encoder only;
        // the regression test `request_with_a_tag_above_i32_max_is_accepted` pins it.
        assert!(
            size > encoded.len(),
            "{api_key:?} v{version}: size {size} < encoded {}",
            encoded.len()
        );
        return;
    }
    let mut encoded: Bytes = encoded.freeze();
    let again = RequestKind::decode(api_key, &mut encoded, version)
        .unwrap_or_else(|e| panic!("{api_key:?} v{version} re-encoded decodes: {e}"));
    assert!(
        encoded.is_empty(),
        "{api_key:?} v{version}: re-decoding left bytes"
    );
    assert_eq!(again, *kind);

    admin_answers_encode(api_key, version, &kind);
});

/// `Encodable::compute_size` of the request inside `kind`.
fn compute_size(kind: &RequestKind, version: i16) -> anyhow::Result<usize> {
    macro_rules! size {
        ($($api:ident),*) => {
            match kind {
                $(RequestKind::$api(r) => r.compute_size(version),)*
                _ => anyhow::bail!("not a supported API"),
            }
        };
    }
    size!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetDelete
    )
}

/// The error messages the broker derives from names and configs in admin requests must be
/// encodable in the response (a response that cannot be encoded is never sent).
fn admin_answers_encode(api_key: ApiKey, version: i16, kind: &RequestKind) {
    let ok = match kind {
        RequestKind::CreateTopics(req) => {
            let mut r = CreateTopicsResponse::default();
            for t in &req.topics {
                let mut errs: Vec<(i16, String)> = Vec::new();
                if let Err(m) = metadata::validate_topic_name(&t.name) {
                    errs.push((errors::INVALID_TOPIC_EXCEPTION, m));
                }
                for c in &t.configs {
                    if let Some(v) = &c.value {
                        errs.extend(metadata::validate_topic_config(&c.name, v).err());
                    }
                }
                for (code, message) in errs {
                    let mut x = create_topics_response::CreatableTopicResult::default();
                    x.name = t.name.clone();
                    x.error_code = code;
                    x.error_message = Some(StrBytes::from_string(message));
                    r.topics.push(x);
                }
            }
            protocol::encode_response(api_key, version, 1, &r)
        }
        RequestKind::AlterConfigs(req) => {
            let mut r = AlterConfigsResponse::default();
            for res in &req.resources {
                let ops = res.configs.iter().map(|c| (&c.name, 0, c.value.as_ref()));
                for (code, message) in refused_ops(ops) {
                    let mut x = alter_configs_response::AlterConfigsResourceResponse::default();
                    x.resource_name = res.resource_name.clone();
                    x.error_code = code;
                    x.error_message = Some(StrBytes::from_string(message));
                    r.responses.push(x);
                }
            }
            protocol::encode_response(api_key, version, 1, &r)
        }
        RequestKind::IncrementalAlterConfigs(req) => {
            let mut r = IncrementalAlterConfigsResponse::default();
            for res in &req.resources {
                let ops = res
                    .configs
                    .iter()
                    .map(|c| (&c.name, c.config_operation, c.value.as_ref()));
                for (code, message) in refused_ops(ops) {
                    let mut x =
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                    x.resource_name = res.resource_name.clone();
                    x.error_code = code;
                    x.error_message = Some(StrBytes::from_string(message));
                    r.responses.push(x);
                }
            }
            protocol::encode_response(api_key, version, 1, &r)
        }
        _ => return,
    };
    ok.unwrap_or_else(|e| panic!("{api_key:?} v{version} error response encodes: {e}"));
}

/// Every refusal the broker's config operations give for these (key, op, value) triples.
fn refused_ops<'a>(
    ops: impl Iterator<Item = (&'a StrBytes, i8, Option<&'a StrBytes>)>,
) -> Vec<(i16, String)> {
    let mut configs = BTreeMap::new();
    ops.filter_map(|(key, op, value)| {
        metadata::apply_config_op(
            &mut configs,
            key.to_string(),
            op,
            value.map(|v| v.to_string()),
        )
        .err()
    })
    .collect()
}
