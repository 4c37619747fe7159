//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::controller::metadata;
use crate::mesh::messages::AdminReq;
use crate::mesh::shard::Shard;
use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::api::common::*;

use crate::api::admin::*;
use crate::mesh::messages::ConfigOps;

pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

pub(crate) fn describe_configs(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DescribeConfigsRequest,
) -> Option<Vec<Bytes>> {
    let mut r = DescribeConfigsResponse::default();
    r.results = req
        .resources
        .iter()
        .map(|res| {
            let mut out = describe_configs_response::DescribeConfigsResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let wanted = |k: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
            };
            match res.resource_type {
                RESOURCE_TOPIC => match shard.topic(res.resource_name.as_str()) {
                    Some(t) => {
                        out.configs = metadata::effective_configs(&t, &shard.cfg)
                            .into_iter()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, val, is_default)| {
                                let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                                c.name = s(&k);
                                c.value = Some(s(&val));
                                c.config_source = if is_default { 5 } else { 1 };
                                c
                            })
                            .collect();
                    }
                    None => {
                        out.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                        out.error_message = Some(s("unknown topic"));
                    }
                },
                RESOURCE_BROKER => {
                    let cfg = &shard.cfg;
                    let entries = [
                        ("auto.create.topics.enable", cfg.auto_create_topics.to_string()),
                        ("num.partitions", cfg.default_partitions.to_string()),
                        ("socket.request.max.bytes", cfg.max_frame_bytes.to_string()),
                        ("message.max.bytes", cfg.default_max_message_bytes.to_string()),
                        ("log.retention.ms", cfg.default_retention_ms.to_string()),
                        ("log.segment.bytes", cfg.default_segment_bytes.to_string()),
                        ("compression.type", cfg.compression_type.clone()),
                    ];
                    out.configs = entries
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, val)| {
                            let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                            c.name = s(k);
                            c.value = Some(s(val));
                            c.read_only = true;
                            c.config_source = 4; // STATIC_BROKER_CONFIG
                            c
                        })
                        .collect();
                }
                other => {
                    out.error_code = errors::INVALID_REQUEST;
                    out.error_message = Some(s(&format!("resource type {other} is not supported")));
                }
            }
            out
        })
        .collect();
    respond(ApiKey::DescribeConfigs, v, corr, &r)
}

pub(crate) async fn alter_configs(
    shard: Rc<Shard>,
    api_key: ApiKey,
    v: i16,
    corr: i32,
    resources: Vec<(i8, String, ConfigOps)>,
    replace: bool,
    validate_only: bool,
) -> Option<Vec<Bytes>> {
    let topics = resources
        .iter()
        .filter(|(t, _, _)| *t == RESOURCE_TOPIC)
        .map(|(_, n, ops)| (n.clone(), ops.clone()))
        .collect();
    let mut got = admin_results(
        shard
            .admin_call(AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            })
            .await,
    );
    let results: Vec<(i8, String, i16, Option<String>)> = resources
        .into_iter()
        .map(|(t, name, _)| {
            if t != RESOURCE_TOPIC {
                tracing::info!(resource_type = t, name = %Untrusted(&name), "alter configs on a non-topic resource refused");
                return (t, name, errors::INVALID_REQUEST, Some("only topic configs can be altered".to_string()));
            }
            let (code, msg) = got.remove(&name).unwrap_or((errors::UNKNOWN_SERVER_ERROR, None));
            (t, name, code, msg)
        })
        .collect();
    if api_key == ApiKey::AlterConfigs {
        let mut r = AlterConfigsResponse::default();
        r.responses = results
            .into_iter()
            .map(|(t, name, code, msg)| {
                let mut x = alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = t;
                x.resource_name = s(&name);
                x.error_code = code;
                x.error_message = msg.map(|m| s(&m));
                x
            })
            .collect();
        respond(api_key, v, corr, &r)
    } else {
        let mut r = IncrementalAlterConfigsResponse::default();
        r.responses = results
            .into_iter()
            .map(|(t, name, code, msg)| {
                let mut x =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = t;
                x.resource_name = s(&name);
                x.error_code = code;
                x.error_message = msg.map(|m| s(&m));
                x
            })
            .collect();
        respond(api_key, v, corr, &r)
    }
}
