;; hello: logs "hello from wasm" at start and then every second (timer 1, repeating).
(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (import "wasmbed" "timer_set" (func $timer_set (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm")

  (func (export "app_start") (result i32)
    (call $log (i32.const 1) (i32.const 16) (i32.const 15))
    ;; timer 1, every 1000 ms, repeating; a negative result would mean the runtime refused it
    (if (i32.lt_s (call $timer_set (i32.const 1) (i32.const 1000) (i32.const 1)) (i32.const 0))
      (then (return (i32.const 1))))
    (i32.const 0))

  (func (export "on_timer") (param $id i32)
    (call $log (i32.const 1) (i32.const 16) (i32.const 15))))
