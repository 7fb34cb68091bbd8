{{- define "keyward.fullname" -}}
{{- printf "%s-keyward" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keyward.labels" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "keyward.selector" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "keyward.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "keyward.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "keyward.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "keyward.caSecret" -}}
{{ default (printf "%s-ca" (include "keyward.fullname" .)) .Values.ca.existingSecret }}
{{- end -}}

{{/* The controller's Service, Deployment, serving certificate and the URL sidecars reach it at. */}}
{{- define "keyward.controller" -}}
{{- printf "%s-controller" (include "keyward.fullname" .) -}}
{{- end -}}

{{- define "keyward.controllerURL" -}}
{{- printf "https://%s.%s.svc:443" (include "keyward.controller" .) .Release.Namespace -}}
{{- end -}}

{{- define "keyward.blockedConfigMap" -}}
{{- printf "%s-blocked" (include "keyward.fullname" .) -}}
{{- end -}}

{{/*
The controller's serving certificate without cert-manager: a CA (whose certificate is the webhook's caBundle
and the sidecars' KEYWARD_CONTROLLER_CA_PEM) and a leaf for the Service's names. Generated once per render and
shared by every template through .Values._keywardControllerTLS (templates are rendered separately; two genCA
calls would give two CAs), and kept across upgrades with lookup: sidecars already running hold the CA in their
environment, so a new one at every upgrade would cut them off from the controller.
*/}}
{{- define "keyward.controllerTLS" -}}
{{- if not (hasKey .Values "_keywardControllerTLS") -}}
{{- $service := include "keyward.controller" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" $service) -}}
{{- $data := dict -}}
{{- if $existing -}}{{- $data = $existing.data | default dict -}}{{- end -}}
{{- $tls := dict -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $tls = dict "ca" (index $data "ca.crt" | b64dec) "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) -}}
{{- else -}}
{{- $dns := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) -}}
{{- $ca := genCA (printf "%s-ca" $service) 3650 -}}
{{- $cert := genSignedCert $service nil $dns 3650 $ca -}}
{{- $tls = dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "_keywardControllerTLS" $tls -}}
{{- end -}}
{{- end -}}

{{/*
One proxy configuration's values: proxy.* overridden by the entry of proxy.configs, key by key and one level
into maps (vault, policy, telemetry, agentLabels). Lists (routes) and policy.rego are replaced whole; a key
the entry does not set is inherited, false and empty values included. Call with (dict "root" $ "entry" $entry);
the result is YAML (fromYaml it).
*/}}
{{- define "keyward.proxyConfig" -}}
{{- $base := omit .root.Values.proxy "configs" "defaultConfig" -}}
{{- $out := dict -}}
{{- range $key, $value := $base -}}{{- $_ := set $out $key $value -}}{{- end -}}
{{- range $key, $value := (.entry | default dict) -}}
{{- if and (kindIs "map" $value) (kindIs "map" (get $out $key)) -}}
{{- $merged := dict -}}
{{- range $k, $v := (get $out $key) -}}{{- $_ := set $merged $k $v -}}{{- end -}}
{{- range $k, $v := $value -}}{{- $_ := set $merged $k $v -}}{{- end -}}
{{- $_ := set $out $key $merged -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "keyward.webhook" -}}
{{- $root := .root -}}
- name: inject.keyward.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: {{ $root.Values.webhook.failurePolicy }}
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  reinvocationPolicy: IfNeeded
  clientConfig:
    service:
      name: {{ include "keyward.controller" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: /mutate
      port: 443
    {{- if .caBundle }}
    caBundle: {{ .caBundle }}
    {{- end }}
  rules:
    - operations: ["CREATE"]
      apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]
  namespaceSelector: {{- toYaml $root.Values.webhook.namespaceSelector | nindent 4 }}
  objectSelector: {{- toYaml $root.Values.webhook.objectSelector | nindent 4 }}
{{- end -}}
