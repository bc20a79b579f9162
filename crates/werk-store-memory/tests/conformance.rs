//! The backend conformance suite, run against the in-memory reference store (the suite's
//! self-test).

werk_store::conformance_tests!(werk_store_memory::RefHarness);
