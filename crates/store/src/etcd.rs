//! The etcd backend: the same interface over a real etcd v3 server (etcd-client, gRPC).
//! Errors are mapped onto the embedded backend's: a compacted revision becomes
//! `Error::Compacted` with the server's compact revision.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::{
    check_value_size, key_after, prefix_end, Deleted, Error, Event, EventKind, KeyValue, Outcome,
    RangeRequest, RangeResponse, Result, Store, WatchStream,
};

pub struct EtcdStore {
    client: Client,
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

/// etcd wants a non-empty key; "\0" with range end "\0" means every key.
fn range_bounds(prefix: &str, start: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let end = prefix_end(prefix.as_bytes());
    let end = if end.is_empty() { vec![0] } else { end };
    let start = if start.is_empty() { vec![0] } else { start };
    (start, end)
}

impl EtcdStore {
    /// Connect to `HOST:PORT`.
    pub async fn connect(addr: &str) -> Result<Self> {
        let endpoint = format!("http://{addr}");
        let client = Client::connect([endpoint.as_str()], None)
            .await
            .map_err(|e| Error::Backend(format!("connect to etcd at {addr}: {e}")))?;
        Ok(EtcdStore { client })
    }

    /// Map an etcd-client error, asking the server for details where the message lacks them.
    async fn map_err(&self, e: etcd_client::Error, requested: i64) -> Error {
        let msg = e.to_string();
        if msg.contains("required revision has been compacted") {
            let compact_revision = self.compact_revision().await.unwrap_or(0);
            return Error::Compacted {
                requested,
                compact_revision,
            };
        }
        if msg.contains("required revision is a future revision") {
            let current = self.current_revision().await.unwrap_or(0);
            return Error::FutureRevision { requested, current };
        }
        if msg.contains("request is too large") {
            return Error::TooLarge {
                key: String::new(),
                size: 0,
                limit: crate::MAX_VALUE_BYTES,
            };
        }
        Error::Backend(format!("etcd: {msg}"))
    }

    /// The server's compact revision: a watch from revision 1 is cancelled with it.
    async fn compact_revision(&self) -> Result<i64> {
        let mut client = self.client.watch_client();
        let opts = WatchOptions::new().with_start_revision(1);
        let (_watcher, mut stream) = client
            .watch("\0", Some(opts))
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|e| Error::Backend(e.to_string()))?
        {
            if resp.compact_revision() != 0 || resp.canceled() {
                return Ok(resp.compact_revision());
            }
            if !resp.events().is_empty() {
                return Ok(0);
            }
        }
        Ok(0)
    }

    async fn cas(
        &self,
        key: &str,
        expected: i64,
        then: TxnOp,
    ) -> Result<std::result::Result<TxnOpResponse, Option<KeyValue>>> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([then])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = match kv.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.map_err(e, 0).await),
        };
        let mut ops = resp.op_responses().into_iter();
        if resp.succeeded() {
            ops.next()
                .map(Ok)
                .ok_or_else(|| Error::Backend("etcd: empty txn response".into()))
        } else {
            let current = match ops.next() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map(convert_kv),
                _ => None,
            };
            Ok(Err(current))
        }
    }
}

fn put_result(
    key: &str,
    value: Vec<u8>,
    revision: i64,
    prev: Option<&etcd_client::KeyValue>,
) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        create_revision: prev.map_or(revision, |p| p.create_revision()),
        mod_revision: revision,
        version: prev.map_or(1, |p| p.version() + 1),
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        match kv.get(key, None).await {
            Ok(resp) => Ok(resp.kvs().first().map(convert_kv)),
            Err(e) => Err(self.map_err(e, 0).await),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let start = match &req.continue_after {
            Some(after) => key_after(after).max(req.prefix.as_bytes().to_vec()),
            None => req.prefix.as_bytes().to_vec(),
        };
        let (start, end) = range_bounds(&req.prefix, start);
        let mut opts = GetOptions::new().with_range(end);
        if req.limit > 0 {
            opts = opts.with_limit(req.limit as i64);
        }
        if req.revision > 0 {
            opts = opts.with_revision(req.revision);
        }
        let mut kv = self.client.kv_client();
        let resp = match kv.get(start, Some(opts)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.map_err(e, req.revision).await),
        };
        let kvs: Vec<KeyValue> = resp.kvs().iter().map(convert_kv).collect();
        let continue_token = if resp.more() {
            kvs.last().map(|kv| kv.key.clone())
        } else {
            None
        };
        let revision = if req.revision > 0 {
            req.revision
        } else {
            header_revision(resp.header())
        };
        Ok(RangeResponse {
            kvs,
            revision,
            continue_token,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<KeyValue>> {
        check_value_size(key, &value)?;
        let opts = PutOptions::new().with_prev_key();
        match expected_mod_revision {
            None => {
                let mut kv = self.client.kv_client();
                let resp = match kv.put(key, value.clone(), Some(opts)).await {
                    Ok(resp) => resp,
                    Err(e) => return Err(self.map_err(e, 0).await),
                };
                let rev = header_revision(resp.header());
                Ok(Outcome::Done(put_result(key, value, rev, resp.prev_key())))
            }
            Some(expected) => {
                let op = TxnOp::put(key, value.clone(), Some(opts));
                match self.cas(key, expected, op).await? {
                    Ok(TxnOpResponse::Put(resp)) => {
                        let rev = header_revision(resp.header());
                        Ok(Outcome::Done(put_result(key, value, rev, resp.prev_key())))
                    }
                    Ok(_) => Err(Error::Backend("etcd: unexpected txn response".into())),
                    Err(current) => Ok(Outcome::Conflict { current }),
                }
            }
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<Outcome<Deleted>> {
        let opts = DeleteOptions::new().with_prev_key();
        let resp = match expected_mod_revision {
            None => {
                let mut kv = self.client.kv_client();
                match kv.delete(key, Some(opts)).await {
                    Ok(resp) => resp,
                    Err(e) => return Err(self.map_err(e, 0).await),
                }
            }
            Some(expected) => match self
                .cas(key, expected, TxnOp::delete(key, Some(opts)))
                .await?
            {
                Ok(TxnOpResponse::Delete(resp)) => resp,
                Ok(_) => return Err(Error::Backend("etcd: unexpected txn response".into())),
                Err(current) => return Ok(Outcome::Conflict { current }),
            },
        };
        match resp.prev_kvs().first() {
            Some(prev) => Ok(Outcome::Done(Deleted {
                prev_kv: convert_kv(prev),
                revision: header_revision(resp.header()),
            })),
            None => Ok(Outcome::Conflict { current: None }),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let (key, end) = range_bounds(prefix, prefix.as_bytes().to_vec());
        let mut opts = WatchOptions::new().with_range(end).with_prev_key();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let mut client = self.client.watch_client();
        let (watcher, stream) = match client.watch(key, Some(opts)).await {
            Ok(pair) => pair,
            Err(e) => return Err(self.map_err(e, from_revision).await),
        };
        // State: the watcher (dropping it would end the watch), the response stream,
        // events not yet handed out, and whether an error ended the watch.
        let state = (watcher, stream, std::collections::VecDeque::new(), false);
        let events = futures::stream::unfold(state, move |mut st| async move {
            loop {
                if let Some(ev) = st.2.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.3 {
                    return None;
                }
                let resp = match st.1.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return None,
                    Err(e) => {
                        st.3 = true;
                        return Some((Err(Error::Backend(format!("etcd watch: {e}"))), st));
                    }
                };
                if resp.compact_revision() != 0 {
                    st.3 = true;
                    let err = Error::Compacted {
                        requested: from_revision,
                        compact_revision: resp.compact_revision(),
                    };
                    return Some((Err(err), st));
                }
                if resp.canceled() {
                    st.3 = true;
                    let err =
                        Error::Backend(format!("etcd watch cancelled: {}", resp.cancel_reason()));
                    return Some((Err(err), st));
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    st.2.push_back(Event {
                        kind: match ev.event_type() {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => EventKind::Delete,
                        },
                        kv: convert_kv(kv),
                        prev_kv: ev.prev_kv().map(convert_kv),
                    });
                }
            }
        });
        Ok(Box::pin(events))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut kv = self.client.kv_client();
        match kv.compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_err(e, revision).await),
        }
    }

    async fn current_revision(&self) -> Result<i64> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get("\0", Some(GetOptions::new().with_keys_only().with_limit(1)))
            .await
            .map_err(|e| Error::Backend(format!("etcd: {e}")))?;
        Ok(header_revision(resp.header()))
    }
}
