;; blinky: toggles LED 0 every "period_ms" milliseconds (config key, decimal; default 500).
;; Boards without LEDs: led_set answers ENOTSUP (-2); blinky says so once and keeps its timer.
(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (import "wasmbed" "timer_set" (func $timer_set (param i32 i32 i32) (result i32)))
  (import "wasmbed" "led_set" (func $led_set (param i32 i32) (result i32)))
  (import "wasmbed" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "period_ms")                       ;; 9 bytes
  (data (i32.const 16) "blinky: this board has no LED")  ;; 29 bytes
  (data (i32.const 48) "blinky: bad period_ms, using 500") ;; 32 bytes
  (global $on (mut i32) (i32.const 0))
  (global $warned (mut i32) (i32.const 0))

  ;; Decimal digits at [ptr, ptr+len) -> value; -1 if empty or not all digits.
  (func $parse (param $ptr i32) (param $len i32) (result i32)
    (local $v i32) (local $d i32) (local $end i32)
    (if (i32.le_s (local.get $len) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $d (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
        (if (i32.gt_u (local.get $d) (i32.const 9)) (then (return (i32.const -1))))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $d)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next)))
    (local.get $v))

  (func (export "app_start") (result i32)
    (local $n i32) (local $period i32)
    (local.set $period (i32.const 500))
    ;; value into [128, 160)
    (local.set $n (call $config_get (i32.const 0) (i32.const 9) (i32.const 128) (i32.const 32)))
    (if (i32.ge_s (local.get $n) (i32.const 0))
      (then
        (local.set $period (call $parse (i32.const 128) (local.get $n)))
        (if (i32.lt_s (local.get $period) (i32.const 10))
          (then
            (call $log (i32.const 2) (i32.const 48) (i32.const 32))
            (local.set $period (i32.const 500))))))
    (if (i32.lt_s (call $timer_set (i32.const 1) (local.get $period) (i32.const 1)) (i32.const 0))
      (then (return (i32.const 1))))
    (i32.const 0))

  (func (export "on_timer") (param $id i32)
    (global.set $on (i32.xor (global.get $on) (i32.const 1)))
    (if (i32.lt_s (call $led_set (i32.const 0) (global.get $on)) (i32.const 0))
      (then
        (if (i32.eqz (global.get $warned))
          (then
            (global.set $warned (i32.const 1))
            (call $log (i32.const 2) (i32.const 16) (i32.const 29))))))))
