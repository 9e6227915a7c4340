//! What a record on disk holds besides the request: its tenant. Segments of the current format
//! (`GGQSEG03`) prefix every payload with `tenant_len u8 | tenant`, `0` meaning the default
//! tenant; records of older segments carry no prefix and belong to the default tenant.

use bytes::{BufMut, Bytes, BytesMut};

use crate::tenants::TenantId;

/// `payload` as a record of the current format holds it.
pub fn wrap(tenant: Option<&TenantId>, payload: &[u8]) -> Bytes {
    let name = tenant.map_or("", |t| t.as_str()).as_bytes();
    // Tenant ids are at most 150 bytes (checked when a request comes in).
    let len = u8::try_from(name.len()).expect("tenant ids fit in a byte");
    let mut out = BytesMut::with_capacity(1 + name.len() + payload.len());
    out.put_u8(len);
    out.put_slice(name);
    out.put_slice(payload);
    out.freeze()
}

/// Where the request starts in a record of `tenant`.
pub fn request_start(tenant: Option<&TenantId>) -> usize {
    1 + tenant.map_or(0, |t| t.as_str().len())
}

/// A record's tenant and where its request starts; `None` if the prefix is not one this
/// graphgen wrote (the record is then treated as unreadable).
pub fn unwrap(record: &[u8]) -> Option<(Option<TenantId>, usize)> {
    let len = usize::from(*record.first()?);
    let name = record.get(1..1 + len)?;
    let tenant = match len {
        0 => None,
        _ => Some(TenantId::parse(std::str::from_utf8(name).ok()?).ok()?),
    };
    Some((tenant, 1 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_record_gives_back_its_tenant_and_request() {
        let team = TenantId::parse("team-a").unwrap();
        for tenant in [None, Some(&team)] {
            let record = wrap(tenant, b"request");
            let (found, start) = unwrap(&record).unwrap();
            assert_eq!(found.as_ref(), tenant);
            assert_eq!(&record[start..], b"request");
        }
        assert_eq!(unwrap(&[]), None, "empty");
        assert_eq!(unwrap(&[9, b'a']), None, "cut short");
        assert_eq!(unwrap(&[1, b'/']), None, "not a tenant id");
    }
}
