# Why malloc5-6.2.2 and malloc5-6.2.3 fail under the memsys5 permutation: replays the situation
# of those tests (two connections, cache_size 2, pages of 1024 bytes, no page-cache buffer, no
# lookaside) and prints what sqlite3_release_memory(3000) frees and how many pages stay cached.
#
# Usage (in an empty directory): testfixture tcl/malloc5-pages.tcl TESTDIR MODE
#   TESTDIR  SQLite's test/ directory;  MODE  default | memsys5 | memsys3
#   memsys5: `sqlite3_config_heap 25000000 64` (as permutations.test memsys5);
#   memsys3: the same, then `sqlite3_install_memsys3` (as permutations.test memsys3).
set testdir [lindex $argv 0]
set mode [lindex $argv 1]
set argv {}
source $testdir/tester.tcl

proc cached_pages {db} {
  array set st [btree_pager_stats [btree_from_db $db]]
  return $st(page)
}
proc report {label} {
  puts [format "%-34s pages cached: db=%d db2=%d" $label [cached_pages db] [cached_pages db2]]
}

catch {db close}
sqlite3_shutdown
switch -- $mode {
  default {}
  memsys5 { sqlite3_config_heap 25000000 64 }
  memsys3 { sqlite3_config_heap 25000000 0; sqlite3_install_memsys3 }
  default { error "unknown mode $mode" }
}
sqlite3_config_lookaside 0 0
sqlite3_config_pagecache 0 100
sqlite3_initialize
autoinstall_test_functions
sqlite3_soft_heap_limit 0

forcedelete test.db test2.db
sqlite3 db test.db
db eval {
  PRAGMA page_size = 1024;
  PRAGMA default_cache_size = 2;
  PRAGMA temp_store = memory;
  CREATE TABLE t(a PRIMARY KEY, b, c);
  INSERT INTO t VALUES(randstr(50,50), randstr(75,75), randstr(100,100));
}
for {set i 0} {$i < 6} {incr i} {
  db eval { INSERT INTO t SELECT randstr(50,50), randstr(75,75), randstr(100,100) FROM t }
}
forcecopy test.db test2.db
sqlite3 db2 test2.db
db2 eval {PRAGMA cache_size = 2}
db2 eval {SELECT * FROM t}
db eval {SELECT * FROM t}
report "after reading both (4 expected):"
set used [sqlite3_memory_used]
set freed [sqlite3_release_memory 3000]
report "release_memory 3000 freed $freed:"
puts "  memory_used dropped by [expr {$used - [sqlite3_memory_used]}] bytes; the test expects 1 page left"
db2 eval {SELECT * FROM t}
set freed [sqlite3_release_memory 3000]
report "read db2, release 3000 freed $freed:"
puts "  the test expects 0 pages left"
db close
db2 close
