"""Account lifecycle (agreement 1.2, 3.1, 3.2): termination, deletion driven by the data map,
retention of what the law requires (pseudonymised), and legal holds."""
