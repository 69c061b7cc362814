/*
 * store/rocks_cf.cc — the one RocksDB call the C API of RocksDB 7.8 lacks:
 * creating many column families at once (DB::CreateColumnFamilies).
 *
 * Why: every DB::CreateColumnFamily — and DB::Open with
 * create_missing_column_families, which calls it once per missing family —
 * rewrites the OPTIONS file, gathering the options of every family the
 * database already holds (and, when the file is written, parsing it back to
 * verify it). Creating N families one by one is therefore quadratic in N:
 * bench-wide's 1,000-table bundle spent ~1,430 s of a 1,573 s save there
 * (bench/RESULTS.md, issue 15). DB::CreateColumnFamilies writes the OPTIONS
 * file once, after the last family.
 *
 * rk_rocks_create_families creates a new database at dir (which must not
 * exist) holding "default" plus names[0..n), and closes it; store.c then
 * opens it with its own options (rk_store_rocks_options) and every family
 * already present, so no family is created at that open. Returns 0, or -1
 * with *err set (left NULL only when even the message could not be
 * allocated). The options used
 * here are only those that matter for an empty database: the families'
 * settings live in the caller's options at each open, not in the files.
 * The info log is off for the reason given in rk_store_rocks_options (a
 * failed write on a full disk must not trip its assertion). Errors: *err
 * gets a malloc'd RocksDB status text (free with rocksdb_free / free), as
 * the C API does; an exception (std::bad_alloc) becomes such a text too.
 */
#include <rocksdb/db.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

extern "C" int rk_rocks_create_families(const char *dir, int n, const char *const *names, char **err);

static void set_err(char **err, const char *msg) {
    if (err && !*err) *err = strdup(msg);
}

static rocksdb::Status create_families(const char *dir, int n, const char *const *names) {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.error_if_exists = true;
    o.paranoid_checks = true;
    o.keep_log_file_num = 1;
    o.info_log_level = rocksdb::InfoLogLevel::NUM_INFO_LOG_LEVELS;
    o.compression = rocksdb::kNoCompression;
    o.max_file_opening_threads = 1;
    rocksdb::DB *db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(o, dir, &db);
    if (!s.ok()) return s;
    std::vector<std::string> v(names, names + n);
    std::vector<rocksdb::ColumnFamilyHandle *> h;
    if (n > 0) s = db->CreateColumnFamilies(rocksdb::ColumnFamilyOptions(o), v, &h);
    for (rocksdb::ColumnFamilyHandle *x : h) {
        rocksdb::Status c = db->DestroyColumnFamilyHandle(x);
        if (s.ok()) s = c;
    }
    rocksdb::Status c = db->Close();
    if (s.ok()) s = c;
    delete db;
    return s;
}

int rk_rocks_create_families(const char *dir, int n, const char *const *names, char **err) {
    try {
        rocksdb::Status s = create_families(dir, n, names);
        if (s.ok()) return 0;
        set_err(err, s.ToString().c_str());
    } catch (const std::bad_alloc &) {
        set_err(err, "IO error: out of memory creating column families");
    } catch (...) {
        set_err(err, "IO error: exception creating column families");
    }
    return -1;
}
