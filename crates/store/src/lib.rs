//! An MVCC key-value store with revisions and watch: embedded (redb) and etcd backends.
