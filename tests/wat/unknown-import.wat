;; A component that imports an interface the host does not provide.
(component
  (import "acme:evil/rootkit@1.0.0" (instance
    (export "pwn" (func)))))
