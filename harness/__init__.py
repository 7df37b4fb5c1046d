"""The platform's real parts run for the tests and the benchmarks: servers started on free ports and
stopped again, and builders of tenants, users and providers made straight in the database. Nothing
in the platform imports it."""
