//! On-disk encoding of the embedded store's records: a small fixed binary layout
//! (little-endian integers, length-prefixed bytes) so a put costs no serializer overhead.

use crate::{Error, Event, EventKind, KeyValue, Result};

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn encode_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    put_bytes(out, kv.key.as_bytes());
    put_bytes(out, &kv.value);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Backend("corrupt record: truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(len)
    }
    fn kv(&mut self) -> Result<KeyValue> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let version = self.i64()?;
        let key = String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| Error::Backend("corrupt record: key is not UTF-8".into()))?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
            version,
        })
    }
}

pub(crate) fn decode_kv(b: &[u8]) -> Result<KeyValue> {
    Reader(b).kv()
}

pub(crate) fn encode_event(ev: &Event) -> Vec<u8> {
    let size = 64 + ev.kv.key.len() * 2 + ev.kv.value.len();
    let size = size + ev.prev_kv.as_ref().map_or(0, |p| p.value.len());
    let mut out = Vec::with_capacity(size);
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    encode_kv(&mut out, &ev.kv);
    match &ev.prev_kv {
        Some(prev) => {
            out.push(1);
            encode_kv(&mut out, prev);
        }
        None => out.push(0),
    }
    out
}

pub(crate) fn decode_event(b: &[u8]) -> Result<Event> {
    let mut r = Reader(b);
    let kind = match r.u8()? {
        0 => EventKind::Put,
        1 => EventKind::Delete,
        k => return Err(Error::Backend(format!("corrupt record: event kind {k}"))),
    };
    let kv = r.kv()?;
    let prev_kv = match r.u8()? {
        0 => None,
        _ => Some(r.kv()?),
    };
    Ok(Event { kind, kv, prev_kv })
}
