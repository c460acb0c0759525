;; trap: 100 ms after starting, its timer handler stores past the end of its one-page memory.
;; The runtime fails the app with the trap message ("out of bounds memory access").
(module
  (import "wasmbed" "timer_set" (func $timer_set (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "app_start") (result i32)
    (drop (call $timer_set (i32.const 1) (i32.const 100) (i32.const 0)))
    (i32.const 0))
  (func (export "on_timer") (param $id i32)
    (i32.store (i32.const 65536) (i32.const 42))))
