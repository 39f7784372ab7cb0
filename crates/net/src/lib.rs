//! Host networking for yun: bridges, veth pairs, taps and address management.
