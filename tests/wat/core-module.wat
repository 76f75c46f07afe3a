;; A plain core module: valid wasm, but not a component.
(module
  (func (export "handle") (result i32) i32.const 0))
